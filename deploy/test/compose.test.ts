// No Docker engine runs where the tests run, so docker-compose.yml and the Dockerfile are checked
// structurally: they parse, every service is wired to services and volumes that exist, every command
// runs a script that the image builds from this repository, and the Kafka image is the version the
// local stack resolves from Maven.
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { validateMessage } from '@urs/contracts';
import { read, root, sourceOf, stages } from './repo';

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  environment?: Record<string, string | number>;
  depends_on?: Record<string, { condition: string }>;
  network_mode?: string;
  container_name?: string;
  volumes?: string[];
  ports?: string[];
  healthcheck?: { test: string[] };
  stop_grace_period?: string;
  restart?: string;
}

interface Compose {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

const compose = parse(read('docker-compose.yml'), { merge: true }) as Compose;
const services = Object.entries(compose.services);

describe('docker-compose.yml', () => {
  test('docker-compose.yml should define Kafka, Redis, the simulator and the five stages', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['kafka', 'redis', 'sim', ...stages].sort());
  });

  test.each(services.filter(([, s]) => s.command?.[0] === 'node'))(
    'service %s should run a script the image compiles from this repository',
    (_name, service) => {
      // The script is the first argument that is not a Node flag.
      const script = service.command?.slice(1).find((arg) => !arg.startsWith('--')) ?? '';
      expect(fs.existsSync(path.join(root, sourceOf(script)))).toBe(true);
      expect(service.image).toBe('defender-urs:local');
      expect(service.build).toEqual({ context: '.', dockerfile: 'Dockerfile' });
    },
  );

  test('every stage should run its own service entry, with its Node flags, the bus, the store and the simulator', () => {
    const nodeFlags = JSON.parse(read('deploy/node-flags.json')) as Record<string, string[]>;
    expect(Object.keys(nodeFlags).every((stage) => stages.includes(stage))).toBe(true);
    for (const stage of stages) {
      const service = compose.services[stage];
      expect(service?.command).toEqual([
        'node',
        ...(nodeFlags[stage] ?? []),
        `services/${stage}/dist/main.js`,
      ]);
      expect(service?.environment).toMatchObject({
        KAFKA_BROKERS: 'kafka:9092',
        REDIS_URL: 'redis://redis:6379',
      });
      // The key that opens tenant secrets only where they are sealed or opened.
      if (['registrar', 'poller', 'vuln-fetcher'].includes(stage))
        expect(String(service?.environment?.['URS_SECRET_KEY'])).toMatch(/^\$\{URS_SECRET_KEY:\?/);
      else expect(service?.environment?.['URS_SECRET_KEY']).toBeUndefined();
    }
  });

  test('every stage should scale on its own: a network namespace of its own, host ports only from a range', () => {
    for (const stage of stages) {
      const service = compose.services[stage];
      expect([stage, service?.network_mode, service?.container_name]).toEqual([stage, undefined, undefined]);
      // A fixed host port can be bound by one replica only; a range gives each replica one.
      for (const port of service?.ports ?? [])
        expect([stage, /^127\.0\.0\.1:\d+-\d+:\d+$/.test(port)]).toEqual([stage, true]);
    }
    expect(compose.services['registrar']?.ports).toEqual(['127.0.0.1:8080-8089:8080']);
  });

  test('the stages that call Microsoft should reach the simulator by the public URL its certificate names', () => {
    const command = compose.services['sim']?.command ?? [];
    const publicUrl = command[command.indexOf('--public-url') + 1];
    expect(publicUrl).toBe('https://sim:8443');
    for (const stage of ['registrar', 'poller', 'vuln-fetcher'])
      expect(compose.services[stage]?.environment).toMatchObject({
        URS_DEFENDER_AUTHORITY_HOST: publicUrl,
        URS_DEFENDER_API_BASE: publicUrl,
      });
  });

  test('a service given NODE_EXTRA_CA_CERTS should mount the file, and only the stages that call Microsoft get it', () => {
    const callsMicrosoft = ['registrar', 'poller', 'vuln-fetcher'];
    for (const [name, service] of services) {
      const caFile = service.environment?.['NODE_EXTRA_CA_CERTS'];
      if (callsMicrosoft.includes(name)) expect([name, caFile]).toEqual([name, '/sim/ca.pem']);
      if (caFile === undefined) continue;
      // Node prints a plain-text "Ignoring extra certs" warning, not a JSON log line, when the file is missing.
      expect([name, callsMicrosoft.includes(name)]).toEqual([name, true]);
      const mounted = (service.volumes ?? []).some((volume) => {
        const target = volume.split(':')[1];
        return target !== undefined && String(caFile).startsWith(`${target.replace(/\/$/, '')}/`);
      });
      expect([name, caFile, mounted]).toEqual([name, caFile, true]);
    }
  });

  test("the simulator's CA key should be on a volume only the simulator mounts, not beside the ca.pem the stages read", () => {
    const sim = compose.services['sim'];
    const command = sim?.command ?? [];
    const flag = (name: string): string | undefined => command[command.indexOf(name) + 1];
    const caDir = flag('--ca-dir');
    const keyDir = flag('--ca-key-dir');
    expect(command).toContain('--ca-key-dir');
    expect(keyDir).not.toBe(caDir);
    /** The volume mounted at `dir` (or above it) in a service. */
    const volumeAt = (service: ComposeService | undefined, dir: string | undefined): string | undefined =>
      (service?.volumes ?? []).find((volume) => {
        const target = (volume.split(':')[1] ?? '').replace(/\/$/, '');
        return dir === target || (dir ?? '').startsWith(`${target}/`);
      });
    const keyVolume = volumeAt(sim, keyDir)?.split(':')[0];
    const caVolume = volumeAt(sim, caDir)?.split(':')[0];
    expect(keyVolume).toBeDefined();
    expect(keyVolume).not.toBe(caVolume);
    for (const [name, service] of services) {
      if (name === 'sim') continue;
      const mounted = (service.volumes ?? []).map((volume) => volume.split(':')[0]);
      expect([name, mounted.includes(keyVolume ?? '')]).toEqual([name, false]);
      // What they do mount of the simulator's, they mount read-only.
      for (const volume of service.volumes ?? [])
        if (volume.startsWith(`${caVolume}:`)) expect([name, volume.endsWith(':ro')]).toEqual([name, true]);
    }
  });

  test('references should name services and volumes that exist', () => {
    const volumeNames = Object.keys(compose.volumes ?? {});
    for (const [name, service] of services) {
      for (const dependency of Object.keys(service.depends_on ?? {})) {
        expect([name, dependency, Object.keys(compose.services).includes(dependency)]).toEqual([
          name,
          dependency,
          true,
        ]);
        expect(compose.services[dependency]?.healthcheck).toBeDefined();
      }
      if (service.network_mode !== undefined) {
        const target = /^service:(.+)$/.exec(service.network_mode)?.[1];
        expect(target !== undefined && target in compose.services).toBe(true);
        expect(service.ports).toBeUndefined();
      }
      for (const volume of service.volumes ?? []) {
        expect(volumeNames).toContain(volume.split(':')[0]);
      }
    }
  });

  test("README's Docker steps should register the simulator's demo tenant over REST, as the registrar takes it", () => {
    const readme = read('README.md');
    const start = readme.indexOf('\n## Docker\n');
    expect(start).toBeGreaterThan(0);
    const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
    const put =
      /curl [^\n]*-X PUT http:\/\/127\.0\.0\.1:8080\/v1\/tenants\/([^/\s]+)\/defender[^\n]*? -d '([^']*)'/.exec(
        section,
      );
    expect(put).not.toBeNull();
    const [, tenantId = '', body = ''] = put ?? [];
    const defender = validateMessage('urs/tenant-registration', {
      tenantId,
      defender: JSON.parse(body),
    }).defender;
    // The tenant the compose file starts the simulator with, unless URS_SIM_TENANTS says otherwise.
    const tenants = String(compose.services['sim']?.environment?.['URS_SIM_TENANTS']);
    const [azureTenantId, clientId, clientSecret] =
      /^\$\{URS_SIM_TENANTS:-([^}]*)\}$/.exec(tenants)?.[1]?.split(':') ?? [];
    expect(defender).toMatchObject({ enabled: true, azureTenantId, clientId, clientSecret });
  });

  test('kafka service should run the Kafka version of deploy/kafka/pom.xml with auto-create off', () => {
    const version = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(read('deploy/kafka/pom.xml'))?.[1];
    const kafka = compose.services['kafka'];
    expect(kafka?.image).toBe(`apache/kafka:${version}`);
    expect(kafka?.environment?.['KAFKA_AUTO_CREATE_TOPICS_ENABLE']).toBe('false');
    const advertised = String(kafka?.environment?.['KAFKA_ADVERTISED_LISTENERS']);
    expect(advertised).toContain('PLAINTEXT://kafka:9092');
  });

  test('kafka and redis should keep their data on volumes, so urs.tenants outlives its container as Redis does', () => {
    const kafka = compose.services['kafka'];
    const logDirs = String(kafka?.environment?.['KAFKA_LOG_DIRS']);
    expect(kafka?.volumes).toContain(`kafka-data:${logDirs}`);
    expect(compose.services['redis']?.volumes).toContain('redis-data:/data');
  });

  test('every service should be started again after a crash or a Docker restart, as the stages are', () => {
    // A Kafka, Redis or simulator left down after the host restarts holds every stage not ready.
    expect(services.map(([name, service]) => [name, service.restart])).toEqual(
      services.map(([name]) => [name, 'unless-stopped']),
    );
  });

  test('every stage should be given longer to stop than its own graceful stop takes', () => {
    for (const stage of stages) {
      const grace = /^(\d+)s$/.exec(String(compose.services[stage]?.stop_grace_period))?.[1];
      expect([stage, Number(grace) * 1000 > 15_000]).toEqual([stage, true]);
    }
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');

  test('Dockerfile should build in one stage and run from a second one on a supported LTS Node (24+)', () => {
    const stagesDeclared = [...dockerfile.matchAll(/^FROM\s+(\S+)\s+AS\s+(\S+)$/gm)].map((m) => m[2]);
    expect(stagesDeclared).toEqual(['build', 'runtime']);
    expect(dockerfile).toMatch(/^COPY --from=build /m);
    const nodeImage = /^ARG NODE_IMAGE=node:(\d+)/m.exec(dockerfile)?.[1];
    // Even majors are LTS; 20 is past its end of life (2026-04-30), 22 ends 2027-04.
    expect(Number(nodeImage) % 2).toBe(0);
    expect(Number(nodeImage)).toBeGreaterThanOrEqual(24);
    expect(dockerfile).toMatch(/^USER node$/m);
  });

  test('Dockerfile should copy only paths that exist in the repository', () => {
    const copies = [...dockerfile.matchAll(/^COPY (?!--from)(.+)$/gm)].map((m) => (m[1] ?? '').split(/\s+/));
    expect(copies.length).toBeGreaterThan(0);
    for (const parts of copies) {
      for (const source of parts.slice(0, -1))
        expect([source, fs.existsSync(path.join(root, source))]).toEqual([source, true]);
    }
  });

  test('Dockerfile should copy every workspace and every project the root build compiles', () => {
    const copied = [...dockerfile.matchAll(/^COPY (?!--from)(.+)$/gm)].flatMap((m) =>
      (m[1] ?? '').split(/\s+/).slice(0, -1),
    );
    const isCopied = (dir: string): boolean =>
      copied.some((source) => dir === source || dir.startsWith(`${source}/`));
    const pkg = JSON.parse(read('package.json')) as { workspaces: string[] };
    const workspaces = pkg.workspaces.map((pattern) => pattern.replace(/\/\*$/, ''));
    // tsconfig.json may carry comments: its references are read as plain paths.
    const references = [...read('tsconfig.json').matchAll(/"path":\s*"([^"]+)"/g)].map((m) => m[1] ?? '');
    expect(references.length).toBeGreaterThan(0);
    for (const dir of [...workspaces, ...references]) expect([dir, isCopied(dir)]).toEqual([dir, true]);
  });

  test("the running user should not own the code it runs: only the simulator's CA directories, where it writes, are node's", () => {
    const runtime = dockerfile.slice(dockerfile.search(/^FROM\s+\S+\s+AS\s+runtime$/m));
    const copies = [...runtime.matchAll(/^COPY .+$/gm)].map((m) => m[0]);
    expect(copies.length).toBeGreaterThan(0);
    // Copied as root's (the build stage's owner): readable by node, not writable.
    for (const copy of copies) expect([copy, /--chown|--chmod/.test(copy)]).toEqual([copy, false]);
    const chowned = [...runtime.matchAll(/\bchown\s+(?:-\S+\s+)*\S+\s+([^&\n]+)/g)].flatMap((m) =>
      (m[1] ?? '').trim().split(/\s+/),
    );
    expect(chowned).toEqual(['/sim', '/sim-key']);
    // The simulator's CA directories in docker-compose.yml are those.
    expect(compose.services['sim']?.volumes).toEqual(['sim-ca:/sim', 'sim-ca-key:/sim-key']);
  });

  test('.dockerignore should keep local installs, builds and stack data out of the context', () => {
    const ignored = read('.dockerignore').split('\n');
    expect(ignored).toEqual(expect.arrayContaining(['**/node_modules', '**/dist', '.stack', '.git']));
  });
});

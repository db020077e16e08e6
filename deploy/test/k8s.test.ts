// No Kubernetes cluster runs where the tests run, so deploy/k8s is checked structurally: every manifest the
// kustomization lists parses, every stage has a Deployment running a script compiled from this repository with
// its Node flags, the environment it gets is what the stage's own configuration reads (and accepts), its probes
// name the paths and the port the runtime serves, and it is given longer to stop than its own graceful stop.
// Each object also keeps to Kubernetes' own API schemas (kubernetes-models' validators, built from Kubernetes
// 1.33's OpenAPI), as strictly as `kubectl apply --validate=strict`: a field the schema does not have fails too.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { parse, parseAllDocuments } from 'yaml';
import { serviceConfig, type Env } from '@urs/config';
import { pollerConfig } from '../../services/poller/src/config';
import { publisherConfig } from '../../services/publisher/src/config';
import { registrarConfig } from '../../services/registrar/src/config';
import { scorerConfig } from '../../services/scorer/src/config';
import { vulnFetcherConfig } from '../../services/vuln-fetcher/src/config';
import { FOLD_THREADS, FOLD_THREAD_RESOURCE_LIMITS } from '../../services/vuln-fetcher/src/export-fold';
import { read, root, sourceOf, sourcesOf } from './repo';

const dir = 'deploy/k8s';

interface Kustomization {
  namespace?: string;
  resources?: string[];
  images?: { name: string; newName?: string; newTag?: string }[];
  [field: string]: unknown;
}

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: { name: string; key: string; optional?: boolean };
    configMapKeyRef?: { name: string; key: string; optional?: boolean };
    fieldRef?: { fieldPath: string };
  };
}

interface Probe {
  httpGet?: { path: string; port: number | string };
}

interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  ports?: { name?: string; containerPort: number }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  env?: EnvVar[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { drop?: string[] };
  };
}

interface PodSpec {
  terminationGracePeriodSeconds?: number;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  containers: Container[];
}

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  spec?: {
    replicas?: number;
    selector?: Record<string, string> | { matchLabels: Record<string, string> };
    template?: {
      metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
      spec: PodSpec;
    };
    maxUnavailable?: number;
    minAvailable?: number;
    ports?: { name?: string; port: number; targetPort?: number | string }[];
    podSelector?: { matchLabels?: Record<string, string> };
    policyTypes?: string[];
    ingress?: IngressRule[];
  };
}

interface IngressRule {
  from?: { namespaceSelector?: { matchLabels?: Record<string, string> }; podSelector?: unknown }[];
  ports?: { protocol?: string; port?: number | string }[];
}

/** Every document of a YAML file, and its syntax errors (the first test fails on any). */
function parseManifests(file: string): { manifests: Manifest[]; errors: string[] } {
  const documents = parseAllDocuments(read(`${dir}/${file}`));
  if (!Array.isArray(documents)) return { manifests: [], errors: ['no YAML documents'] };
  return {
    manifests: documents
      .map((document) => document.toJS() as Manifest)
      .filter((manifest) => manifest !== null),
    errors: documents.flatMap((document) => document.errors.map((error) => error.message)),
  };
}
const manifestsIn = (file: string): Manifest[] => parseManifests(file).manifests;

/** The API schema of each kind the manifests hold, by `apiVersion kind`. */
const schemas: Record<string, { prototype: { validate(): void } }> = {
  'v1 Namespace': Namespace,
  'v1 ConfigMap': ConfigMap,
  'v1 Secret': Secret,
  'v1 Service': Service,
  'apps/v1 Deployment': Deployment,
  'policy/v1 PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1 NetworkPolicy': NetworkPolicy,
};

/**
 * What the API server would refuse in a manifest: values its schema does not allow, and fields it does not have.
 * The schemas let unknown fields through, but their validator reads every field a schema names and every key
 * of a map, so a field it never reads is one the schema does not have. It runs on the manifest itself, not on a
 * model (whose constructor copies it), so that its reads can be watched.
 */
function schemaErrors(manifest: Manifest): string[] {
  const schema = schemas[`${manifest.apiVersion} ${manifest.kind}`];
  if (schema === undefined) return [`no schema for ${manifest.apiVersion} ${manifest.kind}`];
  const unread = new Set<string>();
  const watched = new Map<string, unknown>();
  /** The value at a path, each of its fields unread until the validator reads it. */
  const watch = (value: unknown, at: string): unknown => {
    if (value === null || typeof value !== 'object') return value;
    if (!watched.has(at)) {
      for (const key of Object.keys(value)) unread.add(`${at}/${key}`);
      watched.set(
        at,
        new Proxy(value, {
          get: (target, key, receiver) => {
            const field: unknown = Reflect.get(target, key, receiver);
            if (typeof key !== 'string' || !Object.hasOwn(target, key)) return field;
            unread.delete(`${at}/${key}`);
            return watch(field, `${at}/${key}`);
          },
        }),
      );
    }
    return watched.get(at);
  };
  const errors: string[] = [];
  try {
    schema.prototype.validate.call(watch(manifest, ''));
  } catch (error) {
    errors.push((error as Error).message);
  }
  return [...errors, ...[...unread].map((field) => `${field} is not a field of the schema`)];
}

const kustomization = parseAllDocuments(read(`${dir}/kustomization.yaml`))
  .at(0)
  ?.toJS() as Kustomization;
const listed = kustomization.resources ?? [];
const manifests = listed.filter((file) => fs.existsSync(path.join(root, dir, file))).flatMap(manifestsIn);
const ofKind = (kind: string): Manifest[] => manifests.filter((manifest) => manifest.kind === kind);
const named = (kind: string, name: string): Manifest | undefined =>
  ofKind(kind).find((manifest) => manifest.metadata.name === name);

/** The stages: every directory of services/ with an entry point. */
const stages = fs
  .readdirSync(path.join(root, 'services'))
  .filter((name) => fs.existsSync(path.join(root, 'services', name, 'src', 'main.ts')));
const nodeFlags = JSON.parse(read('deploy/node-flags.json')) as Record<string, string[]>;

/**
 * The heaps a stage's process holds beside its main thread's, MiB: the vuln-fetcher's export fold threads,
 * as many as it runs at once (FOLD_THREADS; the exports read meanwhile fold on the main thread), each its old
 * space and young generation. Not as V8 reports them under the flags: the process's --max-old-space-size
 * overrides a worker's own old space, and each thread keeps to its budget itself.
 */
const threadHeapsMb: Record<string, number> = {
  'vuln-fetcher':
    FOLD_THREADS *
    (FOLD_THREAD_RESOURCE_LIMITS.maxOldGenerationSizeMb +
      FOLD_THREAD_RESOURCE_LIMITS.maxYoungGenerationSizeMb),
};

const secretExample = manifestsIn('secret.example.yaml');
const secret = secretExample.find((manifest) => manifest.kind === 'Secret');

/** Each stage's own configuration, as its main.ts reads it at start (beside serviceConfig). */
const stageConfigs: Record<string, (env: Env) => unknown> = {
  registrar: registrarConfig,
  poller: pollerConfig,
  'vuln-fetcher': vulnFetcherConfig,
  scorer: (env) => scorerConfig(env),
  publisher: publisherConfig,
};

/** A value of the kind each Secret key must hold, as an operator following secret.example.yaml makes it. */
const secretValues: Record<string, () => string> = {
  URS_SECRET_KEY: () => randomBytes(32).toString('base64'),
  URS_SECRET_KEY_ID: () => 'k1',
  URS_SECRET_KEYS_PREVIOUS: () => '',
  URS_API_TOKENS: () => `${randomBytes(16).toString('hex')},${randomBytes(16).toString('hex')}`,
  REDIS_URL: () => `redis://:${randomBytes(16).toString('hex')}@redis.redis.svc.cluster.local:6379`,
  KAFKA_SASL_USERNAME: () => '',
  KAFKA_SASL_PASSWORD: () => '',
};

/** Settings that carry credentials, and whether a stage may start without them (optional in its env). */
const credentials: Record<string, boolean> = {
  REDIS_URL: false,
  KAFKA_SASL_USERNAME: true,
  KAFKA_SASL_PASSWORD: true,
};

function containerOf(stage: string): Container {
  const container = named('Deployment', stage)?.spec?.template?.spec.containers[0];
  if (container === undefined) throw new Error(`no Deployment ${stage} with a container`);
  return container;
}

/** The ConfigMaps a container takes whole (envFrom). */
function configMapsOf(container: Container): Manifest[] {
  return (container.envFrom ?? []).flatMap((source) => {
    if (source.configMapRef === undefined) return [];
    const configMap = named('ConfigMap', source.configMapRef.name);
    expect([source.configMapRef.name, configMap !== undefined]).toEqual([source.configMapRef.name, true]);
    return configMap === undefined ? [] : [configMap];
  });
}

/** The environment a stage's container starts with: its ConfigMaps, then its own env, Secrets filled in. */
function envOf(stage: string): Record<string, string> {
  const container = containerOf(stage);
  const env: Record<string, string> = {};
  for (const configMap of configMapsOf(container)) Object.assign(env, configMap.data ?? {});
  for (const variable of container.env ?? []) {
    const from = variable.valueFrom;
    if (variable.value !== undefined) env[variable.name] = String(variable.value);
    else if (from?.fieldRef !== undefined) env[variable.name] = `${stage}-7d9f8b6c5-x2x4z`;
    else if (from?.secretKeyRef !== undefined) {
      const make = secretValues[from.secretKeyRef.key];
      if (make === undefined)
        throw new Error(`${stage}: no example value for Secret key ${from.secretKeyRef.key}`);
      env[variable.name] = make();
    } else throw new Error(`${stage}: ${variable.name} has neither a value nor a source this test knows`);
  }
  return env;
}

/** A container port by name or number. */
function portNumber(container: Container, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port;
  return container.ports?.find((candidate) => candidate.name === port)?.containerPort;
}

/** Bytes of a Kubernetes memory quantity (`320Mi`, `1Gi`, `300M`, `314572800`). */
function bytes(quantity: string | undefined): number {
  const match = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?$/.exec(quantity ?? '');
  if (!match) throw new Error(`not a memory quantity: ${quantity}`);
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, k: 1e3, M: 1e6, G: 1e9 }[match[2] ?? ''] ?? 1;
  return Number(match[1]) * unit;
}

const code = sourcesOf('libs', 'services').join('\n');

interface RelabelConfig {
  source_labels?: string[];
  separator?: string;
  regex?: string;
  target_label?: string;
  replacement?: string;
  action?: 'replace' | 'keep' | 'drop';
}

const scrapeJob = (
  parse(read('deploy/prometheus/scrape.yml')) as {
    scrape_configs: { job_name: string; relabel_configs: RelabelConfig[] }[];
  }
).scrape_configs[0] as { job_name: string; relabel_configs: RelabelConfig[] };

/** A target's labels after Prometheus's relabelling (replace, keep, drop); null when it is dropped. */
function relabel(configs: RelabelConfig[], labels: Record<string, string>): Record<string, string> | null {
  const result = { ...labels };
  for (const config of configs) {
    const value = (config.source_labels ?? [])
      .map((name) => result[name] ?? '')
      .join(config.separator ?? ';');
    const match = new RegExp(`^(?:${config.regex ?? '(.*)'})$`).exec(value);
    const action = config.action ?? 'replace';
    if (action === 'keep' && !match) return null;
    if (action === 'drop' && match) return null;
    if (action === 'replace' && match && config.target_label) {
      result[config.target_label] = (config.replacement ?? '$1').replace(/\$(\d+)/g, (_, group: string) =>
        String(match[Number(group)] ?? ''),
      );
    }
  }
  return result;
}

describe('deploy/k8s', () => {
  test('every file the kustomization lists should exist and parse into plain Kubernetes objects', () => {
    expect(listed.length).toBeGreaterThan(0);
    for (const file of listed) {
      expect([file, fs.existsSync(path.join(root, dir, file))]).toEqual([file, true]);
      const { manifests: parsed, errors } = parseManifests(file);
      expect([file, errors]).toEqual([file, []]);
      expect([file, parsed.length > 0]).toEqual([file, true]);
      for (const manifest of parsed) {
        // No custom resources: only kinds every cluster serves.
        const kinds = [
          'Namespace',
          'ConfigMap',
          'Deployment',
          'Service',
          'PodDisruptionBudget',
          'NetworkPolicy',
        ];
        expect([file, manifest.kind, kinds.includes(manifest.kind)]).toEqual([file, manifest.kind, true]);
        expect([file, typeof manifest.apiVersion, typeof manifest.metadata?.name]).toEqual([
          file,
          'string',
          'string',
        ]);
      }
    }
    // Everything goes into the namespace the kustomization creates.
    expect(ofKind('Namespace').map((namespace) => namespace.metadata.name)).toEqual([
      kustomization.namespace,
    ]);
  });

  test.each(listed)("%s should keep to Kubernetes' API schemas, with no field they do not have", (file) => {
    const parsed = manifestsIn(file);
    expect(parsed.length).toBeGreaterThan(0);
    for (const manifest of parsed)
      expect([manifest.kind, manifest.metadata.name, schemaErrors(manifest)]).toEqual([
        manifest.kind,
        manifest.metadata.name,
        [],
      ]);
  });

  test('the Secret example should keep to the API schema of a Secret', () => {
    expect(secretExample.map(schemaErrors)).toEqual([[]]);
  });

  test.each<[string, (container: Record<string, unknown>) => void, string]>([
    [
      'a misspelt field',
      (container) => {
        container['readinesProbe'] = container['readinessProbe'];
        delete container['readinessProbe'];
      },
      '/spec/template/spec/containers/0/readinesProbe is not a field of the schema',
    ],
    [
      'a port number as a string',
      (container) => {
        const [port] = container['ports'] as { containerPort: unknown }[];
        if (port) port.containerPort = String(port.containerPort);
      },
      'data/spec/template/spec/containers/0/ports/0/containerPort must be integer',
    ],
    [
      'a misspelt field of a field',
      (container) => {
        const resources = container['resources'] as Record<string, unknown>;
        resources['limit'] = resources['limits'];
        delete resources['limits'];
      },
      '/spec/template/spec/containers/0/resources/limit is not a field of the schema',
    ],
  ])('a Deployment with %s should not keep to the API schema', (_, change, error) => {
    const deployment = structuredClone(named('Deployment', 'registrar'));
    const container = deployment?.spec?.template?.spec.containers[0];
    expect(deployment === undefined || container === undefined).toBe(false);
    if (deployment === undefined || container === undefined) return;
    expect(schemaErrors(deployment)).toEqual([]);
    change(container as unknown as Record<string, unknown>);
    expect(schemaErrors(deployment)).toEqual([error]);
  });

  test('the Secret example should not be listed, so an apply never overwrites the real Secret', () => {
    const files = JSON.stringify(kustomization);
    expect(files).not.toContain('secret.example.yaml');
    expect(ofKind('Secret')).toEqual([]);
    expect(parseManifests('secret.example.yaml').errors).toEqual([]);
    expect(secret?.kind).toBe('Secret');
    expect(secret?.metadata.namespace).toBe(kustomization.namespace);
    // It says how to make each value.
    const text = read(`${dir}/secret.example.yaml`);
    expect(text).toContain('openssl rand -base64 32');
    expect(text).toContain('openssl rand -hex 16');
  });

  test('the ConfigMap should name, and not set, the variables that must stay per Deployment', () => {
    const configMap = named('ConfigMap', 'defender-urs');
    // What each Deployment sets in its own env, not from the Secret (the pod's name as URS_INSTANCE_ID), and the
    // settings whose default is each stage's own: its metrics port (its probes', containerPort's and
    // prometheus.io/port's), its consumer groups, the registrar's REST port (its Service's).
    const ownEnv = stages.flatMap((stage) =>
      (containerOf(stage).env ?? [])
        .filter((variable) => variable.valueFrom?.secretKeyRef === undefined)
        .map((variable) => variable.name),
    );
    expect(ownEnv).toContain('URS_INSTANCE_ID');
    const perDeployment = [
      ...new Set([
        ...ownEnv,
        'URS_METRICS_PORT',
        'URS_CONSUMER_GROUP',
        'URS_PROFILES_GROUP',
        'URS_HTTP_PORT',
      ]),
    ];
    const comments = read(`${dir}/configmap.yaml`)
      .split('\n')
      .filter((line) => line.trimStart().startsWith('#'))
      .join('\n');
    for (const name of perDeployment) {
      expect([name, name in (configMap?.data ?? {})]).toEqual([name, false]);
      expect([name, comments.includes(name)]).toEqual([name, true]);
    }
  });

  test("the Secret example applied as it is should stop the registrar's start, naming URS_API_TOKENS", () => {
    // A placeholder token would otherwise be a valid bearer token anyone reading the example knows.
    const env = { ...envOf('registrar'), ...secret?.stringData };
    expect(() => registrarConfig(env)).toThrow(/^URS_API_TOKENS is required/);
  });

  test.each(['registrar', 'poller', 'vuln-fetcher'])(
    "the Secret example's URS_SECRET_KEY applied as it is should stop the %s's start, naming it",
    (stage) => {
      const placeholder = secret?.stringData?.['URS_SECRET_KEY'] ?? '';
      expect(placeholder).toMatch(/^REPLACE/);
      // The API tokens set, as the example says: its empty URS_API_TOKENS would stop the registrar first.
      const env = { ...envOf(stage), ...secret?.stringData, URS_API_TOKENS: randomBytes(16).toString('hex') };
      const start = (): unknown => stageConfigs[stage]?.(env);
      expect(start).toThrow(/^URS_SECRET_KEY holds a placeholder/);
      expect(start).not.toThrow(placeholder);
    },
  );

  test('every stage of services/ should have a Deployment, and every Deployment should be a stage', () => {
    expect(stages.length).toBe(5);
    expect(
      ofKind('Deployment')
        .map((deployment) => deployment.metadata.name)
        .sort(),
    ).toEqual([...stages].sort());
  });

  test.each(stages)('%s should run a script the image compiles from this repository', (stage) => {
    const container = containerOf(stage);
    // The image's convention (Dockerfile): `node [flags] <script>`, run from its WORKDIR.
    expect(read('Dockerfile')).toMatch(/^WORKDIR \/app$/m);
    expect(container.command?.[0]).toBe('node');
    expect(container.args).toBeUndefined();
    const script = container.command?.slice(1).find((arg) => !arg.startsWith('--')) ?? '';
    expect(script).toBe(`services/${stage}/dist/main.js`);
    expect(fs.existsSync(path.join(root, sourceOf(script)))).toBe(true);
  });

  test.each(stages)('%s should run with the Node flags of deploy/node-flags.json', (stage) => {
    expect(containerOf(stage).command).toEqual([
      'node',
      ...(nodeFlags[stage] ?? []),
      `services/${stage}/dist/main.js`,
    ]);
  });

  test.each(stages)('%s should run the image the kustomization can replace', (stage) => {
    const [name, tag] = containerOf(stage).image.split(':');
    expect([name, tag]).toEqual(['defender-urs', 'latest']);
    expect((kustomization.images ?? []).map((image) => image.name)).toContain(name);
  });

  test.each(stages)('%s should set only variables its configuration reads', (stage) => {
    const reads = sourcesOf('libs', `services/${stage}`).join('\n');
    const names = [
      ...configMapsOf(containerOf(stage)).flatMap((configMap) => Object.keys(configMap.data ?? {})),
      ...(containerOf(stage).env ?? []).map((variable) => variable.name),
    ];
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) expect([name, reads.includes(`'${name}'`)]).toEqual([name, true]);
  });

  test.each(stages)('%s should start: its configuration accepts the environment it is given', (stage) => {
    const env = envOf(stage);
    expect(() => serviceConfig(env, stage)).not.toThrow();
    expect(() => stageConfigs[stage]?.(env)).not.toThrow();
    expect(stageConfigs[stage]).toBeDefined();
  });

  test('the secret key should go only to the stages that seal or open tenant secrets', () => {
    for (const stage of stages) {
      const opensSecrets = read(`services/${stage}/src/config.ts`).includes('secretKeyConfig(');
      const given = (containerOf(stage).env ?? []).some((variable) => variable.name === 'URS_SECRET_KEY');
      expect([stage, given]).toEqual([stage, opensSecrets]);
    }
  });

  test.each(stages)('%s should take every setting that carries credentials from the Secret', (stage) => {
    const configMap = named('ConfigMap', 'defender-urs');
    expect(configMap).toBeDefined();
    for (const [name, optional] of Object.entries(credentials)) {
      expect([name, name in (configMap?.data ?? {})]).toEqual([name, false]);
      const variable = (containerOf(stage).env ?? []).find((candidate) => candidate.name === name);
      const ref = variable?.valueFrom?.secretKeyRef;
      expect([name, ref]).toEqual([
        name,
        { name: secret?.metadata.name, key: name, ...(optional ? { optional: true } : {}) },
      ]);
    }
  });

  test('every Secret a Deployment reads should be the example Secret, with every key it needs', () => {
    for (const stage of stages) {
      for (const variable of containerOf(stage).env ?? []) {
        const ref = variable.valueFrom?.secretKeyRef;
        if (ref === undefined) continue;
        expect([stage, ref.name]).toEqual([stage, secret?.metadata.name]);
        expect([stage, ref.key, ref.key in (secret?.stringData ?? {})]).toEqual([stage, ref.key, true]);
      }
      expect((containerOf(stage).envFrom ?? []).filter((source) => source.secretRef)).toEqual([]);
    }
  });

  test.each(stages)(
    '%s should probe /healthz and /readyz on the port its configuration listens on',
    (stage) => {
      const container = containerOf(stage);
      const { metricsPort } = serviceConfig(envOf(stage), stage);
      expect(metricsPort).toBeGreaterThan(0);
      const liveness = container.livenessProbe?.httpGet;
      const readiness = container.readinessProbe?.httpGet;
      // The registrar's Service routes to replicas whose REST API answers: its part's readiness.
      const readinessPath = stage === 'registrar' ? '/readyz/api' : '/readyz';
      expect([liveness?.path, readiness?.path]).toEqual(['/healthz', readinessPath]);
      // The runtime's health server answers the paths, the registrar declaring its `api` part.
      expect(code).toContain(`path === '/healthz'`);
      if (stage === 'registrar') {
        expect(code).toContain(`PART_READYZ = '/readyz/'`);
        expect(sourcesOf('services/registrar').join('\n')).toMatch(/partReadiness: \{ api: /);
      } else expect(code).toContain(`path === '/readyz'`);
      for (const probe of [liveness, readiness]) expect(portNumber(container, probe?.port)).toBe(metricsPort);
      const annotations = named('Deployment', stage)?.spec?.template?.metadata.annotations;
      expect(annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/path': '/metrics' });
      expect(code).toContain(`path === '/metrics'`);
      expect(Number(annotations?.['prometheus.io/port'])).toBe(metricsPort);
    },
  );

  test.each(stages)(
    "deploy/prometheus/scrape.yml should scrape %s's pods on its metrics port, as a job named after the stage",
    (stage) => {
      const template = named('Deployment', stage)?.spec?.template;
      const { metricsPort } = serviceConfig(envOf(stage), stage);
      // What Kubernetes service discovery tells Prometheus of one of the stage's pods.
      const meta = (kind: string, entries: Record<string, string>) =>
        Object.entries(entries).map(([name, value]) => [
          `__meta_kubernetes_pod_${kind}_${name.replace(/[^a-zA-Z0-9_]/g, '_')}`,
          value,
        ]);
      // One target per declared container port, its address the pod's IP and that port (an IPv6 one in
      // brackets), or the bare IP for a container that declares none.
      const pods = [
        { ip: '10.1.2.3', addresses: ['10.1.2.3:8080', '10.1.2.3'], scraped: `10.1.2.3:${metricsPort}` },
        {
          ip: 'fd00:10:1::3',
          addresses: ['[fd00:10:1::3]:8080', 'fd00:10:1::3'],
          scraped: `[fd00:10:1::3]:${metricsPort}`,
        },
      ];
      for (const { ip, addresses, scraped } of pods) {
        for (const address of addresses) {
          const discovered = {
            __address__: address,
            __metrics_path__: '/metrics',
            __meta_kubernetes_pod_ip: ip,
            __meta_kubernetes_pod_name: `${stage}-0`,
            __meta_kubernetes_pod_phase: 'Running',
            __meta_kubernetes_namespace: 'urs',
            ...Object.fromEntries(meta('label', template?.metadata.labels ?? {})),
            ...Object.fromEntries(meta('annotation', template?.metadata.annotations ?? {})),
          };
          const target = relabel(scrapeJob.relabel_configs, discovered);
          expect([address, target]).toMatchObject([
            address,
            {
              job: stage,
              __address__: scraped,
              __metrics_path__: '/metrics',
              pod: `${stage}-0`,
              namespace: 'urs',
              part_of: 'defender-urs',
            },
          ]);
          // The same pod once it has ended (evicted, or done) is no target.
          for (const phase of ['Failed', 'Succeeded'])
            expect([
              phase,
              relabel(scrapeJob.relabel_configs, { ...discovered, __meta_kubernetes_pod_phase: phase }),
            ]).toEqual([phase, null]);
        }
      }
      // A pod of something else in the namespace is not scraped.
      expect(relabel(scrapeJob.relabel_configs, { __address__: '10.1.2.4:80' })).toBeNull();
    },
  );

  test.each(stages)(
    '%s should be given longer to stop than its preStop wait and graceful stop take',
    (stage) => {
      const { shutdownTimeoutMs } = serviceConfig(envOf(stage), stage);
      const grace = named('Deployment', stage)?.spec?.template?.spec.terminationGracePeriodSeconds;
      const preStop = containerOf(stage).lifecycle?.preStop?.exec?.command;
      // Only the registrar serves requests through a Service: it waits for the proxies to drop it (5 s).
      expect(preStop).toEqual(
        stage === 'registrar' ? ['node', '-e', 'setTimeout(() => {}, 5000)'] : undefined,
      );
      expect(grace).toBeDefined();
      expect((grace ?? 0) * 1000).toBeGreaterThan(shutdownTimeoutMs + (preStop ? 5_000 : 0));
    },
  );

  test.each(stages)(
    '%s should ask for the memory it was measured to need, with headroom to its limit',
    (stage) => {
      const resources = containerOf(stage).resources;
      const request = bytes(resources?.requests?.['memory']);
      const limit = bytes(resources?.limits?.['memory']);
      // The README's measured peak RSS at 100,000 devices: under 300 MB for every stage.
      expect(request).toBeGreaterThanOrEqual(300e6);
      expect(limit).toBeGreaterThanOrEqual(1.5 * request);
      expect(resources?.requests?.['cpu']).toBeDefined();
      // A heap cap the limit would cut short turns V8's late collection into an OOM kill.
      const cap = (nodeFlags[stage] ?? [])
        .map((flag) => /^--max-old-space-size=(\d+)$/.exec(flag)?.[1])
        .find(Boolean);
      if (cap !== undefined) expect(limit).toBeGreaterThan(Number(cap) * 2 ** 20);
    },
  );

  test.each(stages)(
    "%s should cap V8's heaps below its memory limit, leaving a third to memory outside them",
    (stage) => {
      const container = containerOf(stage);
      const limit = bytes(container.resources?.limits?.['memory']);
      const flags = (container.command ?? []).slice(1).filter((arg) => arg.startsWith('--'));
      expect(flags.some((flag) => /^--max-old-space-size=\d+$/.test(flag))).toBe(true);
      // What V8 makes of the flags (the old space and the young generation), as the container's node runs
      // them, with the heaps of the stage's threads.
      const heapLimit =
        Number(
          execFileSync(process.execPath, [
            ...flags,
            '-e',
            "process.stdout.write(String(require('v8').getHeapStatistics().heap_size_limit))",
          ]).toString(),
        ) +
        (threadHeapsMb[stage] ?? 0) * 2 ** 20;
      expect(heapLimit).toBeGreaterThan(0);
      // Buffers (Kafka batches, HTTP bodies, Redis replies), code and the runtime live outside the heap.
      expect(heapLimit).toBeLessThanOrEqual(0.7 * limit);
      // Room for what the stage was measured to hold: peak RSS under 300 MB at 100,000 devices.
      expect(heapLimit).toBeGreaterThanOrEqual(300e6);
    },
  );

  test.each(stages)('%s should run unprivileged on a read-only root filesystem', (stage) => {
    const pod = named('Deployment', stage)?.spec?.template?.spec;
    // The image's user is `node`, uid 1000 in the official Node images.
    expect(read('Dockerfile')).toMatch(/^USER node$/m);
    expect(pod?.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(containerOf(stage).securityContext).toEqual({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
  });

  test('a read-only root filesystem should hold: no library or service writes a file', () => {
    const writes =
      /\b(writeFile|appendFile|createWriteStream|mkdir|mkdtemp|rename|copyFile|symlink|truncate|tmpdir)(Sync)?\s*\(/;
    // Only a module that loads fs (or os, for its temporary directory) can write one.
    const loadsFs = /from '(node:)?(fs|os)(\/promises)?'|require\('(node:)?(fs|os)/;
    const users = sourcesOf('libs', 'services').filter((source) => loadsFs.test(source));
    expect(users.length).toBeGreaterThan(0);
    for (const source of users) expect(writes.exec(source)?.[0]).toBeUndefined();
  });

  test.each(stages)(
    '%s should have a disruption budget of one replica and a selector of its own',
    (stage) => {
      const deployment = named('Deployment', stage);
      const selector = (deployment?.spec?.selector as { matchLabels: Record<string, string> }).matchLabels;
      const labels = deployment?.spec?.template?.metadata.labels ?? {};
      expect(labels).toMatchObject(selector);
      expect(deployment?.spec?.replicas).toBeGreaterThanOrEqual(1);
      // No other stage's pods match it.
      for (const other of ofKind('Deployment').filter((candidate) => candidate !== deployment))
        expect(other.spec?.template?.metadata.labels).not.toMatchObject(selector);
      const budget = named('PodDisruptionBudget', stage);
      expect(budget?.spec?.maxUnavailable).toBe(1);
      expect(budget?.spec?.selector).toEqual({ matchLabels: selector });
    },
  );

  test('the registrar Service should reach its REST port', () => {
    const service = named('Service', 'registrar');
    const container = containerOf('registrar');
    const { httpPort } = registrarConfig(envOf('registrar'));
    expect(service?.spec?.selector).toEqual(
      (named('Deployment', 'registrar')?.spec?.selector as { matchLabels: unknown }).matchLabels,
    );
    const ports = service?.spec?.ports ?? [];
    expect(ports.length).toBe(1);
    expect(portNumber(container, ports[0]?.targetPort)).toBe(httpPort);
    expect(ofKind('Service').map((candidate) => candidate.metadata.name)).toEqual(['registrar']);
  });

  test.each(stages)(
    'NetworkPolicies should let into %s only its own ports, from namespaces an operator labels',
    (stage) => {
      const labels = named('Deployment', stage)?.spec?.template?.metadata.labels ?? {};
      const selecting = ofKind('NetworkPolicy').filter((policy) =>
        Object.entries(policy.spec?.podSelector?.matchLabels ?? {}).every(
          ([key, value]) => labels[key] === value,
        ),
      );
      // Selected by a policy at all, the pods take in only what some policy's rule lets in.
      expect(selecting.some((policy) => policy.spec?.policyTypes?.includes('Ingress'))).toBe(true);
      const container = containerOf(stage);
      const rules = selecting.flatMap((policy) => policy.spec?.ingress ?? []);
      for (const rule of rules) {
        // A rule without sources, or with a source that names no label, would let in every pod of the cluster.
        expect((rule.from ?? []).length).toBeGreaterThan(0);
        for (const source of rule.from ?? [])
          expect(Object.keys(source.namespaceSelector?.matchLabels ?? {}).length).toBeGreaterThan(0);
        // Each port a rule names is one the stage serves (a misspelt name would let nothing in).
        expect((rule.ports ?? []).length).toBeGreaterThan(0);
        for (const port of rule.ports ?? [])
          expect([stage, portNumber(container, port.port)]).not.toEqual([stage, undefined]);
      }
      const admitted = rules.flatMap((rule) =>
        (rule.ports ?? []).map((port) => portNumber(container, port.port)),
      );
      expect(new Set(admitted)).toEqual(new Set((container.ports ?? []).map((port) => port.containerPort)));
    },
  );
});

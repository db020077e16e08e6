import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { freePort } from './infra';
import type { Child, ProcessGroup } from './procs';
import { tail } from './procs';

/**
 * The Node flags a stage is deployed with (`deploy/node-flags.json`, the same as its docker-compose
 * command), so the bench measures the services as they run.
 */
function nodeFlags(root: string, name: ServiceName): string[] {
  const flags = JSON.parse(readFileSync(join(root, 'deploy/node-flags.json'), 'utf8')) as Record<
    string,
    string[]
  >;
  return flags[name] ?? [];
}

export const SERVICES = ['registrar', 'poller', 'vuln-fetcher', 'scorer', 'publisher'] as const;
export type ServiceName = (typeof SERVICES)[number];

export interface PipelineOptions {
  root: string;
  runDir: string;
  /** Scenario name: part of the log file names. */
  scenario: string;
  kafkaBrokers: string[];
  redisUrl: string;
  /** Unique per scenario: every topic and key of the run starts with it. */
  topicPrefix: string;
  redisPrefix: string;
  simBaseUrl: string;
  simCaFile: string;
  services: readonly ServiceName[];
  /** Extra variables for every service (e.g. quota or mode settings of a scenario). */
  extraEnv?: Record<string, string>;
  /** Services started with `--cpu-prof`, profiles written to the run directory when they stop. */
  profile?: readonly string[];
  /** Processes per service (default 1): the second and later are named `<service>#<n>`. */
  replicas?: Partial<Record<ServiceName, number>>;
}

export interface Pipeline {
  /** Every process, by service name (`<service>#<n>` for the second and later replica of one). */
  children: Map<string, Child>;
  apiToken: string;
  httpPort: number;
  /** PUT /v1/tenants/{id}/defender on the registrar. */
  register(tenantId: string, defender: Record<string, unknown>): Promise<void>;
  /** The name of a service that died, if one did (scenarios stop waiting then). */
  crashed(): string | undefined;
  /**
   * Waits until no process holds a message it has not finished (`urs_consumer_buffered_messages`), at most
   * `timeoutMs`: the ms it took, or undefined when the time ran out. A cycle's summary can go out before its
   * work is done (a bulk cycle's export is stored after its last batch is sent), and a process's peak
   * memory is read after that work, not before it.
   */
  idle(timeoutMs: number): Promise<number | undefined>;
  /** The /metrics text of every process of a service (a scrape that fails is left out). */
  metrics(service: ServiceName): Promise<string[]>;
}

/** Messages a process holds and has not finished, from its /metrics (0 when it has no such gauge). */
export function bufferedMessages(metricsText: string): number {
  let total = 0;
  for (const line of metricsText.split('\n')) {
    if (!line.startsWith('urs_consumer_buffered_messages')) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) total += value;
  }
  return total;
}

function getText(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', timeout: 2_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} on port ${port} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

function getStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', timeout: 2_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

function sendJson(
  port: number,
  method: string,
  path: string,
  token: string,
  body: unknown,
): Promise<{ status: number; text: string }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method,
        timeout: 30_000,
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
        );
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * Starts the services as separate processes (`node services/<name>/dist/main.js`) with a scenario's
 * own topics and keys, and waits until each answers /readyz (its consumers joined their groups).
 */
export async function startPipeline(group: ProcessGroup, options: PipelineOptions): Promise<Pipeline> {
  const apiToken = randomBytes(24).toString('base64url');
  const httpPort = await freePort();
  const common: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    NODE_EXTRA_CA_CERTS: options.simCaFile,
    KAFKA_BROKERS: options.kafkaBrokers.join(','),
    REDIS_URL: options.redisUrl,
    URS_TOPIC_PREFIX: options.topicPrefix,
    URS_REDIS_PREFIX: options.redisPrefix,
    URS_SECRET_KEY: randomBytes(32).toString('base64'),
    URS_DEFENDER_AUTHORITY_HOST: options.simBaseUrl,
    URS_DEFENDER_API_BASE: options.simBaseUrl,
    URS_LOG_LEVEL: 'info',
    ...options.extraEnv,
  };
  const children = new Map<string, Child>();
  const metricsPorts = new Map<string, number>();
  const crashed = (): string | undefined => {
    for (const [name, child] of children)
      if (child.done()) return `${name} exited; last lines of ${child.logFile}:\n${tail(child.logFile)}`;
    return undefined;
  };
  async function spawn(service: ServiceName, name: string): Promise<{ child: Child; metricsPort: number }> {
    const metricsPort = await freePort();
    const env: NodeJS.ProcessEnv = {
      ...common,
      URS_METRICS_PORT: String(metricsPort),
      URS_INSTANCE_ID: `${options.topicPrefix}${name}`,
      ...(service === 'registrar' ? { URS_HTTP_PORT: String(httpPort), URS_API_TOKENS: apiToken } : {}),
    };
    const profile = options.profile?.includes(service)
      ? [
          '--cpu-prof',
          `--cpu-prof-dir=${join(options.runDir, 'profiles')}`,
          `--cpu-prof-name=${options.scenario}.${name}.cpuprofile`,
        ]
      : [];
    const child = group.spawn({
      name,
      command: process.execPath,
      args: [
        ...nodeFlags(options.root, service),
        ...profile,
        join(options.root, 'services', service, 'dist/main.js'),
      ],
      env,
      cwd: options.root,
      logFile: join(options.runDir, `${options.scenario}.${name}.log`),
    });
    children.set(name, child);
    metricsPorts.set(name, metricsPort);
    return { child, metricsPort };
  }

  /** Starts one process of a service and waits for /readyz; a start that fails or exits is reported with its log. */
  async function startOne(service: ServiceName, name: string): Promise<void> {
    const { child, metricsPort } = await spawn(service, name);
    const deadline = Date.now() + 90_000;
    for (;;) {
      if ((await getStatus(metricsPort, '/readyz')) === 200) return;
      if (/"message":"start failed"/.test(tail(child.logFile, 50)) || child.done())
        throw new Error(`${name} failed to start:\n${tail(child.logFile)}`);
      if (Date.now() > deadline)
        throw new Error(`${name} was not ready within 90 s:\n${tail(child.logFile)}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  /** Starts every replica of a service. */
  async function start(service: ServiceName): Promise<void> {
    const count = options.replicas?.[service] ?? 1;
    await Promise.all(
      Array.from({ length: count }, (_, index) =>
        startOne(service, index === 0 ? service : `${service}#${index + 1}`),
      ),
    );
  }

  // Every service creates the topics it is missing at start and waits until the ones it created have
  // leaders; the first one creates them all, so the others never see a topic another is still settling.
  const [first, ...rest] = options.services;
  try {
    if (first) await start(first);
    await Promise.all(rest.map((name) => start(name)));
  } catch (error) {
    await group.stop([...children.values()]);
    throw error;
  }
  return {
    children,
    apiToken,
    httpPort,
    async register(tenantId, defender) {
      // The registrar's /readyz says its REST port listens, so the first call is answered.
      const answer = await sendJson(
        httpPort,
        'PUT',
        `/v1/tenants/${encodeURIComponent(tenantId)}/defender`,
        apiToken,
        defender,
      );
      if (answer.status !== 200 && answer.status !== 201)
        throw new Error(`registering ${tenantId}: ${answer.status} ${answer.text.slice(0, 500)}`);
    },
    crashed,
    async metrics(service) {
      const ports = [...metricsPorts].filter(([name]) => name === service || name.startsWith(`${service}#`));
      const texts = await Promise.all(ports.map(([, port]) => getText(port, '/metrics').catch(() => null)));
      return texts.filter((text): text is string => text !== null);
    },
    async idle(timeoutMs) {
      const started = Date.now();
      for (;;) {
        const held = await Promise.all(
          // A scrape that fails (a process too busy to answer in 2 s) counts as busy.
          [...metricsPorts.values()].map((port) =>
            getText(port, '/metrics').then(bufferedMessages, () => Number.POSITIVE_INFINITY),
          ),
        );
        if (held.every((count) => count === 0)) return Date.now() - started;
        if (Date.now() - started > timeoutMs || crashed()) return undefined;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    },
  };
}

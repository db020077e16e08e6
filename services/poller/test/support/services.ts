import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { freePort, testInfra, uniqueId, waitFor } from '@urs/testkit';

const ROOT = join(__dirname, '..', '..', '..', '..');

/** A service running as its own process (`node services/<name>/dist/main.js`), every output line kept. */
export interface ServiceProcess {
  readonly name: string;
  readonly process: ChildProcess;
  /** Every stdout and stderr line so far. */
  readonly lines: string[];
  /** Resolves once a line matches. */
  waitForLine(predicate: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** SIGTERM and wait for the exit (SIGKILL after `timeoutMs`). */
  stop(timeoutMs?: number): Promise<void>;
  /** SIGKILL: a crash. */
  kill(): Promise<void>;
}

export type Stage = 'registrar' | 'poller' | 'vuln-fetcher' | 'scorer' | 'publisher';

export function spawnService(name: Stage, env: Record<string, string>): ServiceProcess {
  const child = spawn(process.execPath, [join(ROOT, 'services', name, 'dist', 'main.js')], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      const parts = (rest + chunk).split('\n');
      rest = parts.pop() ?? '';
      lines.push(...parts.filter((line) => line.length > 0));
    });
    stream?.on('end', () => {
      if (rest.length > 0) lines.push(rest);
    });
  }
  return {
    name,
    process: child,
    lines,
    waitForLine: (predicate, timeoutMs = 30_000) =>
      waitFor(() => lines.find(predicate), { timeoutMs, description: `a ${name} line`, intervalMs: 25 }),
    async stop(timeoutMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      await exited;
      clearTimeout(timer);
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

export { freePort } from '@urs/testkit';

/**
 * Starts `stages` on the shared Kafka and Redis, with a Redis and a topic prefix of their own (named after
 * `tag`), metrics and the registrar's REST API on free ports, `env` over those settings; each is pushed on
 * `started` (to be killed after the test) and given back with its metrics port. The stages share one
 * URS_SECRET_KEY, as in production: a stage holding another key under the same key id refuses to start.
 */
export async function startStages(
  stages: readonly Stage[],
  tag: string,
  env: Record<string, string>,
  started: ServiceProcess[],
): Promise<{ stage: ServiceProcess; port: number }[]> {
  const redisPrefix = `${uniqueId(tag)}:`;
  const topicPrefix = `${uniqueId(tag)}.`;
  const key = secretKey();
  return Promise.all(
    stages.map(async (name) => {
      const port = await freePort();
      const stage = spawnService(name, {
        KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
        REDIS_URL: testInfra().redisUrl,
        URS_REDIS_PREFIX: redisPrefix,
        URS_TOPIC_PREFIX: topicPrefix,
        URS_METRICS_PORT: String(port),
        URS_HTTP_PORT: String(await freePort()),
        URS_API_TOKENS: `token-of-the-${tag}-test`,
        URS_SECRET_KEY: key,
        URS_SHUTDOWN_TIMEOUT_MS: '15000',
        ...env,
      });
      started.push(stage);
      return { stage, port };
    }),
  );
}

/** A fresh 32-byte key, base64, for URS_SECRET_KEY. */
export function secretKey(): string {
  return randomBytes(32).toString('base64');
}

/** JSON over HTTP with the bearer token; resolves status, body and the raw text (for scans). */
export async function api(
  baseUrl: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
  // Tests read answers field by field; typing every answer shape here would only restate the assertions.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
): Promise<{ status: number; body: any; text: string }> {
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, body: text.length > 0 ? JSON.parse(text) : undefined, text };
}

/** GET `path` of a service's health port: its status and JSON body, or undefined while nothing listens. */
export async function health(
  port: number,
  path: string,
): Promise<{ status: number; body: unknown } | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(2_000) });
    return { status: response.status, body: await response.json() };
  } catch {
    return undefined;
  }
}

/**
 * /readyz once it answers 503 past the start's first steps (within 30 s), failing with the service's output if
 * it exits meanwhile. By default a 503 whose reason is the start's own (`starting: …`, while it waits for Redis
 * and sets up, a moment when Redis answers) is passed over; `starting` true takes it too.
 */
export function notReady(
  service: ServiceProcess,
  port: number,
  { starting = false }: { starting?: boolean } = {},
): Promise<{ status: number; body: { reason?: string } & Record<string, unknown> }> {
  return waitFor(
    async () => {
      if (service.process.exitCode !== null) throw new Error(service.lines.join('\n'));
      const answer = (await health(port, '/readyz')) as
        { status: number; body: { reason?: string } & Record<string, unknown> } | undefined;
      if (answer?.status !== 503) return undefined;
      return starting || !answer.body.reason?.startsWith('starting:') ? answer : undefined;
    },
    { timeoutMs: 30_000, description: `${service.name} /readyz answering 503` },
  );
}

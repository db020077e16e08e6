import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { join } from 'node:path';
import type { SimStats } from '@urs/simulator';
import type { Child, ProcessGroup } from './procs';
import { tail } from './procs';

export type { SimStats };

/** One look at the simulator's counters. `t` is the local clock (ms) when the answer arrived. */
export interface StatsSample {
  t: number;
  vulnerabilities: number;
  machines: number;
  bulk: number;
  token: number;
  inFlight: number;
  throttled: number;
}

export interface SimulatorProcess {
  baseUrl: string;
  caFile: string;
  child: Child;
  call<T>(method: string, path: string, body?: unknown): Promise<T>;
  addTenant(spec: {
    azureTenantId: string;
    clientId: string;
    clientSecret: string;
    size: number;
    seed: number;
  }): Promise<void>;
  setLatency(meanMs: number, jitterMs: number): Promise<void>;
  setQuotas(enabled: boolean): Promise<void>;
  stats(): Promise<SimStats>;
  resetStats(): Promise<void>;
  /** A page of a tenant's machines, as `/api/machines` shapes them (control API: not counted, no quota). */
  machines(azureTenantId: string, skip: number, top: number): Promise<Record<string, unknown>[]>;
  /** Samples the statistics every `periodMs` until the returned stop function is called. */
  sample(periodMs: number): { stop(): Promise<StatsSample[]> };
}

/** How long a control call may take, unless it adds a tenant with a heavier export (addTenantTimeoutMs). */
const CONTROL_TIMEOUT_MS = 30_000;

/**
 * How long adding a tenant may take: the simulator renders every device's export rows as it adds the tenant,
 * ~15–25 µs a row on the loaded 2-core machine, which the light mix (~5.7 rows per device) keeps within the
 * control calls' 30 s; 100,000 devices at 57 rows (5.7 million rows) took over 30 s. Twice that rate for a
 * fleet with an export volume.
 */
export function addTenantTimeoutMs(size: number, exportRowsPerDevice: number | undefined): number {
  if (exportRowsPerDevice === undefined) return CONTROL_TIMEOUT_MS;
  return CONTROL_TIMEOUT_MS + Math.ceil((size * exportRowsPerDevice * 50) / 1_000);
}

/** `npm run sim` as a process of its own, on a free port, with its CA in the run directory. */
export async function startSimulatorProcess(
  group: ProcessGroup,
  root: string,
  runDir: string,
  options: {
    latencyMs: number;
    jitterMs: number;
    quotas: boolean;
    /** The export's volume per device of every fleet added (the simulator's FleetSpec fields); none: its light mix. */
    exportVolume?: { exportRowsPerDevice?: number; exportSoftwareOnlyShare?: number };
  },
): Promise<SimulatorProcess> {
  let announce: (line: string) => void = () => undefined;
  const ready = new Promise<{ baseUrl: string; caFile: string }>((resolve) => {
    announce = (line) => {
      try {
        const parsed = JSON.parse(line) as { baseUrl?: string; caFile?: string };
        if (parsed.baseUrl && parsed.caFile) resolve({ baseUrl: parsed.baseUrl, caFile: parsed.caFile });
      } catch {
        // not the announcement
      }
    };
  });
  const logFile = join(runDir, 'simulator.log');
  const child = group.spawn({
    name: 'simulator',
    command: process.execPath,
    args: [
      join(root, 'test/simulator/dist/main.js'),
      '--port',
      '0',
      '--host',
      '127.0.0.1',
      '--ca-dir',
      join(runDir, 'sim-ca'),
      '--latency',
      `${options.latencyMs}:${options.jitterMs}`,
      '--quotas',
      options.quotas ? 'on' : 'off',
    ],
    env: process.env,
    cwd: root,
    logFile,
    onStdoutLine: (line) => announce(line),
  });
  const started = await Promise.race([
    ready,
    child.exited.then((code) => {
      throw new Error(`the simulator exited (${code}) before it was ready:\n${tail(logFile)}`);
    }),
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error('the simulator did not start within 30 s')), 30_000).unref(),
    ),
  ]);
  if (!/^https:\/\/127\.0\.0\.1:\d+$/.test(started.baseUrl))
    throw new Error(`the simulator is not on loopback: ${started.baseUrl}`);
  const agent = new Agent({ ca: readFileSync(started.caFile, 'utf8'), keepAlive: true, maxSockets: 4 });

  function call<T>(method: string, path: string, body?: unknown, timeoutMs = CONTROL_TIMEOUT_MS): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        `${started.baseUrl}${path}`,
        {
          method,
          agent,
          timeout: timeoutMs,
          headers:
            payload === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if ((res.statusCode ?? 500) >= 300)
              reject(new Error(`simulator ${method} ${path}: ${res.statusCode} ${text.slice(0, 300)}`));
            else resolve((text ? JSON.parse(text) : {}) as T);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`simulator ${method} ${path} timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  const stats = (): Promise<SimStats> => call<SimStats>('GET', '/_sim/stats');

  return {
    baseUrl: started.baseUrl,
    caFile: started.caFile,
    child,
    call,
    async addTenant(spec) {
      await call(
        'POST',
        '/_sim/tenants',
        {
          azureTenantId: spec.azureTenantId,
          apps: [{ clientId: spec.clientId, clientSecret: spec.clientSecret }],
          fleet: { size: spec.size, seed: spec.seed, ...options.exportVolume },
        },
        addTenantTimeoutMs(spec.size, options.exportVolume?.exportRowsPerDevice),
      );
    },
    async setLatency(meanMs, jitterMs) {
      await call('PUT', '/_sim/latency', { meanMs, jitterMs });
    },
    async setQuotas(enabled) {
      await call('PUT', '/_sim/quotas', { enabled });
    },
    stats,
    async resetStats() {
      await call('POST', '/_sim/stats/reset');
    },
    async machines(azureTenantId, skip, top) {
      const page = await call<{ value: Record<string, unknown>[] }>(
        'GET',
        `/_sim/tenants/${encodeURIComponent(azureTenantId)}/machines?skip=${skip}&top=${top}`,
      );
      return page.value;
    },
    sample(periodMs) {
      const samples: StatsSample[] = [];
      let stopped = false;
      const loop = (async () => {
        while (!stopped) {
          const begun = Date.now();
          try {
            const s = await stats();
            samples.push({
              t: Date.now(),
              vulnerabilities: s.calls['vulnerabilities'] ?? 0,
              machines: s.calls['machines'] ?? 0,
              bulk: s.calls['bulk'] ?? 0,
              token: s.calls['token'] ?? 0,
              inFlight: s.inFlight,
              throttled: s.throttled,
            });
          } catch {
            // a missed sample only lowers the resolution
          }
          const wait = periodMs - (Date.now() - begun);
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        }
      })();
      return {
        async stop() {
          stopped = true;
          await loop;
          return samples;
        },
      };
    },
  };
}

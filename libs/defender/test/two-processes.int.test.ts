import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { type Simulator, startSimulator } from '@urs/simulator';
import { RUN_TS, type TestRedis, createTestRedis, testInfra } from '@urs/testkit';
import { newApp } from './support';

interface WorkerReport {
  fetched: number;
  failed: number;
  cves: number;
  started: number;
  finished: number;
}

const DEVICES = 3_000;
const LATENCY_MS = 20;

function startWorker(env: NodeJS.ProcessEnv): {
  child: ChildProcessWithoutNullStreams;
  lines: AsyncIterator<string>;
  stderr: string[];
} {
  const child = spawn(process.execPath, [RUN_TS, join(__dirname, 'fixtures/vuln-worker.ts')], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
  return { child, lines: createInterface({ input: child.stdout })[Symbol.asyncIterator](), stderr };
}

async function nextJson<T>(lines: AsyncIterator<string>, stderr: string[]): Promise<T> {
  const line = await lines.next();
  if (line.done) throw new Error(`worker ended early: ${stderr.join('')}`);
  return JSON.parse(line.value) as T;
}

describe('getMachineVulnerabilities across processes', () => {
  let sim: Simulator;
  let redis: TestRedis;
  let dir: string;

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false, latency: { meanMs: LATENCY_MS, jitterMs: 5 } });
    redis = createTestRedis();
    dir = mkdtempSync(join(tmpdir(), 'urs-defender-'));
  });

  afterAll(async () => {
    await sim.close();
    await redis.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('getMachineVulnerabilities should keep at most 10 calls in flight when two processes share the Redis limiter', async () => {
    const app = newApp();
    sim.addTenant({ azureTenantId: app.azureTenantId, apps: [app], fleet: { size: DEVICES, seed: 42 } });
    const ids = sim.machines(app.azureTenantId).map((m) => m.id);
    expect(ids).toHaveLength(DEVICES);
    const expectedCves = ids.reduce((sum, id) => sum + sim.vulnerabilities(app.azureTenantId, id).length, 0);
    const halves = [ids.slice(0, DEVICES / 2), ids.slice(DEVICES / 2)];
    const workers = halves.map((half, i) => {
      const file = join(dir, `ids-${i}.json`);
      writeFileSync(file, JSON.stringify(half));
      return startWorker({
        WORKER_IDS_FILE: file,
        WORKER_PREFIX: redis.prefix,
        WORKER_CA_FILE: sim.caFile,
        WORKER_BASE: sim.baseUrl,
        WORKER_TENANT: app.azureTenantId,
        WORKER_CLIENT: app.clientId,
        WORKER_SECRET: app.clientSecret,
        REDIS_URL: testInfra().redisUrl,
      });
    });
    try {
      for (const w of workers)
        expect(await nextJson<{ ready: boolean }>(w.lines, w.stderr)).toEqual({ ready: true });
      sim.resetStats();
      for (const w of workers) w.child.stdin.write('go\n');
      const reports = await Promise.all(workers.map((w) => nextJson<WorkerReport>(w.lines, w.stderr)));

      const stats = sim.stats();
      expect(stats.calls.vulnerabilities).toBeGreaterThanOrEqual(DEVICES);
      expect(stats.peakConcurrency).toBeLessThanOrEqual(10);
      expect(stats.peakConcurrency).toBeGreaterThanOrEqual(8);
      expect(reports.map((r) => r.failed)).toEqual([0, 0]);
      expect(reports.reduce((sum, r) => sum + r.fetched, 0)).toBe(DEVICES);
      expect(reports.reduce((sum, r) => sum + r.cves, 0)).toBe(expectedCves);
      // Both processes were calling at the same time, so the limit held across processes, not by turns.
      const [a, b] = reports as [WorkerReport, WorkerReport];
      expect(Math.min(a.finished, b.finished)).toBeGreaterThan(Math.max(a.started, b.started));

      const seconds = (Math.max(a.finished, b.finished) - Math.min(a.started, b.started)) / 1000;
      process.stderr.write(
        `two processes: ${DEVICES} per-device calls in ${seconds.toFixed(1)} s = ${(DEVICES / seconds).toFixed(0)} calls/s ` +
          `(latency ${LATENCY_MS} ms, 10 slots: at most ${10_000 / LATENCY_MS} calls/s), peak in flight ${stats.peakConcurrency}\n`,
      );
    } finally {
      for (const w of workers) w.child.kill();
    }
  }, 240_000);
});

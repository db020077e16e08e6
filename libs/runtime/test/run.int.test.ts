import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { RUN_TS, freePort, createTestKafka, uniqueId, waitFor } from '@urs/testkit';
import { deleteTopicsOf, serviceEnv, startRedis, stopRedis } from './support';

interface Run {
  /** The service's log lines (stdout) and the fixture's own lines (stderr), as parsed JSON. */
  logs: Record<string, unknown>[];
  said: Record<string, unknown>[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal: NodeJS.Signals): void;
}

/** Runs the fixture service in a process of its own, on the test's Kafka and Redis and its own prefix. */
function runFixture(mode: string, prefix: string, env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, [RUN_TS, join(__dirname, 'fixtures/service.ts')], {
    env: {
      ...process.env,
      ...serviceEnv(prefix, 'info'),
      FIXTURE_MODE: mode,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = (into: Record<string, unknown>[]) => {
    let rest = '';
    return (chunk: Buffer): void => {
      const text = rest + chunk.toString('utf8');
      const parts = text.split('\n');
      rest = parts.pop() ?? '';
      for (const line of parts) {
        try {
          into.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          into.push({ text: line });
        }
      }
    };
  };
  const logs: Record<string, unknown>[] = [];
  const said: Record<string, unknown>[] = [];
  child.stdout.on('data', lines(logs));
  child.stderr.on('data', lines(said));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return { logs, said, exited, kill: (signal) => child.kill(signal) };
}

/** The process's exit, or undefined when it has not exited within `ms` (it is then killed). */
async function exitWithin(run: Run, ms: number): Promise<Awaited<Run['exited']> | undefined> {
  const timeout = new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), ms).unref());
  const exit = await Promise.race([run.exited, timeout]);
  if (!exit) run.kill('SIGKILL');
  return exit;
}

const messages = (run: Run): unknown[] => run.logs.map((line) => line.message);

describe('runService', () => {
  const kafka = createTestKafka();

  it('should stop within a short shutdown timeout with exit code 0, committing what finished and leaving a handler that cannot stop uncommitted', async () => {
    const prefix = `${uniqueId('run')}.`;
    const topic = `${prefix}urs.tenants`;
    const groupId = `${topic}.fixture`;
    // A third of it (1 s) for the messages in flight to finish, a third for them to stop once aborted.
    const run = runFixture('slow-handler', prefix, { URS_SHUTDOWN_TIMEOUT_MS: '3000' });
    try {
      await waitFor(() => messages(run).includes('started'), { timeoutMs: 40_000 });
      // The handler takes as many ms as the key says: one finishes within the drain, one never in time.
      const producer = kafka.producer();
      await producer.connect();
      await producer.send({
        topic,
        messages: [
          { key: '300', value: null },
          { key: '60000', value: null },
        ],
      });
      await producer.disconnect();
      await waitFor(() => run.said.filter((line) => line.fixture === 'handling').length === 2, {
        timeoutMs: 20_000,
      });
      run.kill('SIGTERM');
      const exit = await exitWithin(run, 20_000);
      // Within the shutdown timeout by the service's own clock: past it, the process exits 1 saying so.
      expect(exit).toMatchObject({ code: 0, signal: null });
      expect(messages(run)).not.toContain('graceful stop timed out, exiting');
      expect(run.logs).toContainEqual(expect.objectContaining({ message: 'stopped', exitCode: 0 }));
      expect(run.said).toContainEqual({ fixture: 'handled', key: '300' });
      expect(run.said).not.toContainEqual({ fixture: 'handled', key: '60000' });
      // The first message's offset is committed, the second's is left for the next owner.
      const admin = kafka.admin();
      await admin.connect();
      try {
        const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
        expect(offsets?.partitions).toEqual([expect.objectContaining({ partition: 0, offset: '1' })]);
        await admin.deleteGroups([groupId]);
      } finally {
        await admin.disconnect();
      }
    } finally {
      run.kill('SIGKILL');
      await deleteTopicsOf(kafka, prefix);
    }
  });

  it('should exit 1 at once, naming the variable, when a setting of its own is bad and Kafka is unreachable', async () => {
    const port = await freePort();
    const run = runFixture('no-such-mode', `${uniqueId('run')}.`, {
      KAFKA_BROKERS: `127.0.0.1:${port}`,
      REDIS_URL: `redis://127.0.0.1:${port}`,
    });
    // KafkaJS would retry an unreachable broker for ~30 s before giving up, then fail on it: the setting is read
    // before anything connects, so the failure names it.
    const exit = await exitWithin(run, 20_000);
    expect(exit).toMatchObject({ code: 1, signal: null });
    // One line, on stderr, naming the variable and its rule; nothing was built, so nothing else logged.
    expect(run.said).toEqual([
      expect.objectContaining({
        level: 'error',
        message: 'start failed',
        error: expect.objectContaining({
          code: 'CONFIG_INVALID',
          message: expect.stringMatching(
            /^FIXTURE_MODE must be one of signal-in-setup, .*\(got "no-such-mode"\)$/,
          ),
        }),
      }),
    ]);
    expect(run.logs).toEqual([]);
  });

  it('should exit 1 with the reason redacted when the failure quotes a secret', async () => {
    const port = await freePort();
    // A setting's error quotes the value it got: here, a form-encoded secret pasted in the wrong variable.
    const run = runFixture('client_secret=s3cr3t-Value', `${uniqueId('run')}.`, {
      KAFKA_BROKERS: `127.0.0.1:${port}`,
      REDIS_URL: `redis://127.0.0.1:${port}`,
    });
    const exit = await exitWithin(run, 20_000);
    expect(exit).toMatchObject({ code: 1, signal: null });
    expect(run.said).toEqual([
      expect.objectContaining({
        message: 'start failed',
        error: expect.objectContaining({
          code: 'CONFIG_INVALID',
          message: expect.stringContaining('(got "client_secret=[redacted]")'),
        }),
      }),
    ]);
    expect(JSON.stringify(run.said)).not.toContain('s3cr3t-Value');
  });

  it('should stop with exit code 0, without starting, when SIGTERM comes during setup', async () => {
    const prefix = `${uniqueId('run')}.`;
    const run = runFixture('signal-in-setup', prefix);
    try {
      const exit = await exitWithin(run, 40_000);
      expect(exit).toMatchObject({ code: 0, signal: null });
      // Setup was told at once, through `stopping`, rather than the process ignoring the signal.
      expect(run.said).toContainEqual({ fixture: 'setup returns', sawStopping: true });
      expect(messages(run)).not.toContain('started');
      expect(run.logs).toContainEqual(
        expect.objectContaining({ message: 'stopped while starting', exitCode: 0 }),
      );
    } finally {
      await deleteTopicsOf(kafka, prefix);
    }
  });

  it('should answer /healthz while Redis is away at the start, and stop at once with exit code 0 on SIGTERM', async () => {
    const prefix = `${uniqueId('run')}.`;
    const [redisPort, metricsPort] = [await freePort(), await freePort()];
    const run = runFixture('redis-in-setup', prefix, {
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      URS_METRICS_PORT: String(metricsPort),
      URS_SHUTDOWN_TIMEOUT_MS: '10000',
    });
    try {
      const healthz = await waitFor(
        () => fetch(`http://127.0.0.1:${metricsPort}/healthz`).then((response) => response.status),
        { timeoutMs: 20_000 },
      );
      expect(healthz).toBe(200);
      // Once its topics are made (this fixture does not wait for Kafka), the start waits for Redis.
      const readyz = await waitFor(
        async () => {
          const response = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
          const body = (await response.json()) as { reason?: string };
          return response.status === 503 && body.reason?.includes('Redis (REDIS_URL)') ? body : undefined;
        },
        { timeoutMs: 20_000 },
      );
      expect(readyz).toEqual({
        status: 'not-ready',
        reason: 'starting: waiting for Redis (REDIS_URL) to answer',
      });
      run.kill('SIGTERM');
      // Redis never answers: a stop that waited for it would run into the shutdown timeout and exit 1.
      const exit = await exitWithin(run, 20_000);
      expect(exit).toMatchObject({ code: 0, signal: null });
      expect(messages(run)).not.toContain('graceful stop timed out, exiting');
      expect(run.logs).toContainEqual(
        expect.objectContaining({ message: 'stopped while starting', exitCode: 0 }),
      );
      // Setup waits for Redis: it never began.
      expect(run.said).not.toContainEqual({ fixture: 'setup reads Redis' });
    } finally {
      run.kill('SIGKILL');
      await deleteTopicsOf(kafka, prefix);
    }
  });

  it('should stop at once with exit code 0 on SIGTERM when Redis is lost again during setup', async () => {
    const prefix = `${uniqueId('run')}.`;
    const redisPort = await freePort();
    const redis = await startRedis(redisPort);
    // Longer than the stop may take: a stop that waits for the setup's read times out, exit 1.
    const run = runFixture('redis-lost-in-setup', prefix, {
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      URS_SHUTDOWN_TIMEOUT_MS: '20000',
    });
    try {
      // The start's wait for Redis is over: setup runs, then Redis goes away under it.
      await waitFor(() => run.said.some((line) => line.fixture === 'setup begins'), { timeoutMs: 30_000 });
      await stopRedis(redis);
      await waitFor(() => run.said.some((line) => line.fixture === 'setup reads Redis'), {
        timeoutMs: 10_000,
      });
      run.kill('SIGTERM');
      const exit = await exitWithin(run, 30_000);
      expect(messages(run)).not.toContain('graceful stop timed out, exiting');
      expect(exit).toMatchObject({ code: 0, signal: null });
      expect(run.logs).toContainEqual(
        expect.objectContaining({ message: 'stopped while starting', exitCode: 0 }),
      );
      expect(run.said).not.toContainEqual({ fixture: 'setup read Redis' });
    } finally {
      run.kill('SIGKILL');
      await stopRedis(redis);
      await deleteTopicsOf(kafka, prefix);
    }
  }, 90_000);

  it('should exit 0 as soon as its close finished, though a socket is still open', async () => {
    const prefix = `${uniqueId('run')}.`;
    const run = runFixture('open-handle', prefix, { URS_SHUTDOWN_TIMEOUT_MS: '30000' });
    try {
      await waitFor(() => messages(run).includes('started'), { timeoutMs: 40_000 });
      run.kill('SIGTERM');
      // The open socket would hold a process left to end on its own until the shutdown timeout (30 s, past this
      // wait), which then exits 1.
      const exit = await exitWithin(run, 20_000);
      expect(exit).toMatchObject({ code: 0, signal: null });
      expect(messages(run)).toEqual(expect.arrayContaining(['stopping', 'stopped']));
      expect(messages(run)).not.toContain('graceful stop timed out, exiting');
    } finally {
      await deleteTopicsOf(kafka, prefix);
    }
  });

  it('should exit 1 naming the part still closing when the graceful stop times out', async () => {
    const prefix = `${uniqueId('run')}.`;
    const run = runFixture('stuck-close', prefix, { URS_SHUTDOWN_TIMEOUT_MS: '2000' });
    try {
      await waitFor(() => messages(run).includes('started'), { timeoutMs: 40_000 });
      run.kill('SIGTERM');
      const exit = await exitWithin(run, 20_000);
      expect(exit).toMatchObject({ code: 1, signal: null });
      expect(run.logs).toContainEqual(
        expect.objectContaining({
          message: 'graceful stop timed out, exiting',
          shutdownTimeoutMs: 2000,
          waitingFor: 'close stuck-part',
        }),
      );
    } finally {
      await deleteTopicsOf(kafka, prefix);
    }
  });
});

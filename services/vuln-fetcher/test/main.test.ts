import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { RUN_TS } from '@urs/testkit';

/** A port of 127.0.0.1 on which nothing listens (a free one, closed again). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Runs the vuln-fetcher's main.ts until it exits, killed after `killAfterMs`; what it wrote. */
function runMain(
  env: Record<string, string>,
  killAfterMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [RUN_TS, join(__dirname, '../src/main.ts')], {
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  return new Promise((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

describe('vuln-fetcher main', () => {
  it('should fail the start before connecting, naming the variable, when a setting of its own is bad', async () => {
    // Nothing listens on Kafka's or Redis's port: a start that connected first would retry for ~30 s and
    // be killed (exit code null) rather than exit 1 by itself.
    const port = await closedPort();
    const exit = await runMain(
      {
        KAFKA_BROKERS: `127.0.0.1:${port}`,
        REDIS_URL: `redis://127.0.0.1:${port}`,
        URS_SECRET_KEY: Buffer.alloc(32, 7).toString('base64'),
        URS_VULN_CONCURRENCY: '0',
      },
      10_000,
    );
    expect(exit.code).toBe(1);
    expect(exit.stdout).toBe('');
    expect(
      exit.stderr
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as unknown),
    ).toEqual([
      expect.objectContaining({
        service: 'vuln-fetcher',
        message: 'start failed',
        error: expect.objectContaining({ message: 'URS_VULN_CONCURRENCY must be ≥ 1 (got 0)' }),
      }),
    ]);
  }, 15_000);
});

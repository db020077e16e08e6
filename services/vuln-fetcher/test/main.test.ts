import { join } from 'node:path';
import { freePort, runMain } from '@urs/testkit';

describe('vuln-fetcher main', () => {
  it('should fail the start before connecting, naming the variable, when a setting of its own is bad', async () => {
    // Nothing listens on Kafka's or Redis's port: a start that connected first would retry for ~30 s and
    // be killed (exit code null) rather than exit 1 by itself.
    const port = await freePort();
    const run = runMain(join(__dirname, '..', 'src', 'main.ts'), {
      KAFKA_BROKERS: `127.0.0.1:${port}`,
      REDIS_URL: `redis://127.0.0.1:${port}`,
      URS_SECRET_KEY: Buffer.alloc(32, 7).toString('base64'),
      URS_VULN_CONCURRENCY: '0',
    });
    expect(await run.exitWithin(10_000)).toBe(1);
    expect(run.lines).toEqual([
      expect.objectContaining({
        service: 'vuln-fetcher',
        message: 'start failed',
        error: expect.objectContaining({ message: 'URS_VULN_CONCURRENCY must be ≥ 1 (got 0)' }),
      }),
    ]);
  }, 15_000);
});

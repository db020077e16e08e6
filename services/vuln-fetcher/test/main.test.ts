import { join } from 'node:path';
import { runMain, watchedPort } from '@urs/testkit';

describe('vuln-fetcher main', () => {
  it('should fail the start before connecting, naming the variable, when a setting of its own is bad', async () => {
    // Kafka's and Redis's port counts who connects: a start that connected first would be seen there, however
    // long a loaded machine takes to start the process.
    const watched = await watchedPort();
    try {
      const run = runMain(join(__dirname, '..', 'src', 'main.ts'), {
        KAFKA_BROKERS: `127.0.0.1:${watched.port}`,
        REDIS_URL: `redis://127.0.0.1:${watched.port}`,
        URS_SECRET_KEY: Buffer.alloc(32, 7).toString('base64'),
        URS_VULN_CONCURRENCY: '0',
      });
      expect(await run.exitWithin(60_000)).toBe(1);
      expect(watched.connections()).toBe(0);
      expect(run.lines).toEqual([
        expect.objectContaining({
          service: 'vuln-fetcher',
          message: 'start failed',
          error: expect.objectContaining({ message: 'URS_VULN_CONCURRENCY must be ≥ 1 (got 0)' }),
        }),
      ]);
    } finally {
      await watched.close();
    }
  }, 90_000);
});

import { join } from 'node:path';
import { runMain, watchedPort } from '@urs/testkit';

describe('registrar main', () => {
  it('should fail the start before connecting, naming URS_DEFENDER_CA_FILE, when the file it names is missing', async () => {
    // Kafka's and Redis's port counts who connects: a start that connected first would be seen there, however
    // long a loaded machine takes to start the process.
    const watched = await watchedPort();
    try {
      const missing = join(__dirname, 'no-such-ca.pem');
      const run = runMain(join(__dirname, '..', 'src', 'main.ts'), {
        KAFKA_BROKERS: `127.0.0.1:${watched.port}`,
        REDIS_URL: `redis://127.0.0.1:${watched.port}`,
        URS_SECRET_KEY: Buffer.alloc(32, 7).toString('base64'),
        URS_API_TOKENS: 'token-0123456789abcdef',
        URS_DEFENDER_CA_FILE: missing,
      });
      expect(await run.exitWithin(60_000)).toBe(1);
      expect(watched.connections()).toBe(0);
      expect(run.lines).toEqual([
        expect.objectContaining({
          service: 'registrar',
          message: 'start failed',
          error: expect.objectContaining({
            code: 'CONFIG_INVALID',
            message: `URS_DEFENDER_CA_FILE names ${missing}, which does not exist`,
          }),
        }),
      ]);
    } finally {
      await watched.close();
    }
  }, 90_000);
});

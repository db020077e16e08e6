import { join } from 'node:path';
import { freePort, runMain } from '@urs/testkit';

describe('registrar main', () => {
  it('should fail the start before connecting, naming URS_DEFENDER_CA_FILE, when the file it names is missing', async () => {
    // Nothing listens on Kafka's or Redis's port: a start that connected first would retry for ~30 s and be
    // killed (no exit code) rather than exit 1 by itself.
    const port = await freePort();
    const missing = join(__dirname, 'no-such-ca.pem');
    const run = runMain(join(__dirname, '..', 'src', 'main.ts'), {
      KAFKA_BROKERS: `127.0.0.1:${port}`,
      REDIS_URL: `redis://127.0.0.1:${port}`,
      URS_SECRET_KEY: Buffer.alloc(32, 7).toString('base64'),
      URS_API_TOKENS: 'token-0123456789abcdef',
      URS_DEFENDER_CA_FILE: missing,
    });
    expect(await run.exitWithin(10_000)).toBe(1);
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
  }, 15_000);
});

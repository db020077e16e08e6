import { startService } from '@urs/runtime';
import { uniqueId, waitFor } from '@urs/testkit';
import { freePort, serviceEnv } from './support';

/** /readyz's JSON once it answers 503, undefined while nothing listens. */
async function notReady(port: number): Promise<unknown> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2_000) });
    return response.status === 503 ? await response.json() : undefined;
  } catch {
    return undefined;
  }
}

describe('startService with waitForKafka', () => {
  it('should serve, start nothing that needs Kafka, say /readyz waits for it, fail waiting sends and stop cleanly', async () => {
    const [kafkaPort, metricsPort] = [await freePort(), await freePort()];
    const stop = new AbortController();
    let served = false;
    let started = false;
    let send: Promise<unknown> | undefined;
    const starting = startService({
      name: 'test-service',
      env: {
        ...serviceEnv(`${uniqueId('wait')}.`),
        KAFKA_BROKERS: `127.0.0.1:${kafkaPort}`,
        URS_METRICS_PORT: String(metricsPort),
      },
      waitForKafka: true,
      stop: stop.signal,
      setup: async ({ publisher }) => ({
        // What answers while Kafka is away (a REST API): its writes wait for the publisher.
        serve: async () => {
          served = true;
          send = publisher.sendRaw('nowhere', []);
          send.catch(() => undefined);
        },
        // After the runners, with Kafka (a scheduler, a sweep that publishes).
        start: async () => void (started = true),
      }),
    });
    starting.catch(() => undefined);
    const answer = await waitFor(() => notReady(metricsPort), { timeoutMs: 15_000 });
    expect(answer).toEqual({ status: 'not-ready', reason: expect.stringContaining('waiting for Kafka') });
    expect(served).toBe(true);
    expect(started).toBe(false);
    const asked = Date.now();
    stop.abort();
    await expect(starting).rejects.toMatchObject({ code: 'SERVICE_STOPPED', closedCleanly: true });
    expect(Date.now() - asked).toBeLessThan(5_000);
    expect(started).toBe(false);
    // The send that waited for Kafka fails with the start instead of hanging.
    await expect(send).rejects.toBeDefined();
  });
});

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
  it('should start its parts and say /readyz waits for Kafka while none answers, and give up cleanly on a stop', async () => {
    const [kafkaPort, metricsPort] = [await freePort(), await freePort()];
    const stop = new AbortController();
    let partsStarted = false;
    const starting = startService({
      name: 'test-service',
      env: {
        ...serviceEnv(`${uniqueId('wait')}.`),
        KAFKA_BROKERS: `127.0.0.1:${kafkaPort}`,
        URS_METRICS_PORT: String(metricsPort),
      },
      waitForKafka: true,
      stop: stop.signal,
      setup: async () => ({ start: async () => void (partsStarted = true) }),
    });
    starting.catch(() => undefined);
    const answer = await waitFor(() => notReady(metricsPort), { timeoutMs: 15_000 });
    expect(answer).toEqual({ status: 'not-ready', reason: expect.stringContaining('waiting for Kafka') });
    expect(partsStarted).toBe(true);
    const asked = Date.now();
    stop.abort();
    await expect(starting).rejects.toMatchObject({ code: 'SERVICE_STOPPED', closedCleanly: true });
    expect(Date.now() - asked).toBeLessThan(5_000);
  });
});

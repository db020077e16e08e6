import type { Publisher } from '@urs/bus';
import { unlessAborted } from '@urs/resilience';

/** The publisher the start connects while setup's placeholder waits for it, settled from outside. */
export interface PublisherPromise {
  promise: Promise<Publisher>;
  resolve(publisher: Publisher): void;
  reject(error: unknown): void;
}

export function publisherPromise(): PublisherPromise {
  let resolve!: (publisher: Publisher) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<Publisher>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/**
 * A publisher for setup while Kafka is not reached yet (ServiceOptions.waitForKafka): its sends wait until the
 * publisher is connected. The runtime closes the connected one.
 */
export function publisherOnceConnected(connected: Promise<Publisher>): Publisher {
  return {
    send: async (topic, contract, messages) => (await connected).send(topic, contract, messages),
    sendRaw: async (topic, messages) => (await connected).sendRaw(topic, messages),
    close: async () => undefined,
  };
}

/**
 * Waits for ServiceParts.started, or for `stop`: true once started, false when the stop came first (the start
 * is then given up, as during setup). A rejection of `started` is thrown.
 */
export async function startedUnlessStopped(
  started: Promise<void>,
  stop: AbortSignal | undefined,
): Promise<boolean> {
  if (!stop) {
    await started;
    return true;
  }
  try {
    await unlessAborted(started, stop);
  } catch (error) {
    if (!stop.aborted) throw error;
  }
  return !stop.aborted;
}

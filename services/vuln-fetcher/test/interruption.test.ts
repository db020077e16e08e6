import { getEventListeners, getMaxListeners } from 'node:events';
import { batch, message, setup } from './handler-support';

/**
 * Calls that each listen to the signal they are given (as a Defender call does while it waits or runs) and
 * wait until `release`; a call whose signal aborts fails at once.
 */
function heldCalls() {
  const signals: AbortSignal[] = [];
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  async function machineVulnerabilities(_id: string, signal?: AbortSignal): Promise<never[]> {
    if (!signal) throw new Error('a call without a signal');
    signals.push(signal);
    let stop = (): void => undefined;
    const stopped = new Promise<void>((resolve) => (stop = resolve));
    signal.addEventListener('abort', stop, { once: true });
    try {
      await Promise.race([released, stopped]);
      if (signal.aborted) throw new Error('aborted');
      return [];
    } finally {
      signal.removeEventListener('abort', stop);
    }
  }
  return { signals, release: () => release(), machineVulnerabilities };
}

async function until(check: () => boolean, what: string): Promise<void> {
  const giveUpAt = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const BATCHES = 16;

describe('createEnrichHandler interruptions', () => {
  it("the service's stop signal should hold one listener however many batches run, none once they end", async () => {
    const stop = new AbortController();
    const calls = heldCalls();
    const { handler } = setup(calls, { signal: stop.signal, concurrency: 1 });
    const running = Array.from({ length: BATCHES }, (_, i) =>
      handler(message(batch({ cycleId: `c${i}`, devices: [{ id: 'd1' }] }))),
    );
    try {
      await until(() => calls.signals.length === BATCHES, 'a call of every batch');
      expect(getEventListeners(stop.signal, 'abort')).toHaveLength(1);
    } finally {
      calls.release();
      await Promise.allSettled(running);
    }
    await Promise.all(running);
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(0);
  });

  it("the service's stop should still stop every batch in flight, and each one later at once", async () => {
    const stop = new AbortController();
    const calls = heldCalls();
    const { handler, sent } = setup(calls, { signal: stop.signal, concurrency: 1 });
    const running = Array.from({ length: BATCHES }, (_, i) =>
      handler(message(batch({ cycleId: `c${i}`, devices: [{ id: 'd1' }] }))),
    );
    try {
      await until(() => calls.signals.length === BATCHES, 'a call of every batch');
    } finally {
      stop.abort();
    }
    const results = await Promise.allSettled(running);
    expect(results.map((result) => result.status)).toEqual(Array(BATCHES).fill('rejected'));
    await expect(handler(message(batch({ cycleId: 'late' })))).rejects.toMatchObject({ code: 'STOPPING' });
    expect(sent).toEqual([]);
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(0);
  });

  it("a batch's signal should take a listener of each of its concurrent calls without a leak warning, and keep none after", async () => {
    const calls = heldCalls();
    const concurrency = 20;
    const devices = Array.from({ length: concurrency }, (_, i) => ({ id: `d${i}` }));
    const { handler, sent } = setup(calls, { signal: new AbortController().signal, concurrency });
    const running = handler(message(batch({ devices, totalDevices: concurrency })));
    let batchSignal: AbortSignal | undefined;
    try {
      await until(() => calls.signals.length === concurrency, "every call of the batch's workers");
      batchSignal = calls.signals[0] as AbortSignal;
      expect(calls.signals.every((signal) => signal === batchSignal)).toBe(true);
      const listening = getEventListeners(batchSignal, 'abort').length;
      expect(listening).toBe(concurrency);
      // Node warns of a possible leak when a signal's listeners pass its maximum (10 unless set).
      expect(listening).toBeLessThanOrEqual(getMaxListeners(batchSignal));
    } finally {
      calls.release();
      await Promise.allSettled([running]);
    }
    await running;
    expect(sent).toHaveLength(1);
    expect(getEventListeners(batchSignal, 'abort')).toHaveLength(0);
  });
});

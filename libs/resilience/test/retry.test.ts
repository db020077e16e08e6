import { UrsError, retryDelayMs, retryPolicy, withRetry } from '@urs/resilience';

describe('retryPolicy', () => {
  it('should reject a maxDelayMs below initialDelayMs and name the field', () => {
    expect(() => retryPolicy({ initialDelayMs: 500, maxDelayMs: 100 })).toThrow(/maxDelayMs/);
  });

  it('should reject fewer than one attempt', () => {
    expect(() => retryPolicy({ maxAttempts: 0 })).toThrow(/maxAttempts/);
  });
});

describe('retryDelayMs', () => {
  const policy = retryPolicy({ initialDelayMs: 100, maxDelayMs: 1_000, multiplier: 2 });

  it('should grow the cap exponentially and stop at maxDelayMs', () => {
    const almostOne = () => 0.999999;
    expect(retryDelayMs(policy, 1, almostOne)).toBe(99);
    expect(retryDelayMs(policy, 2, almostOne)).toBe(199);
    expect(retryDelayMs(policy, 4, almostOne)).toBe(799);
    expect(retryDelayMs(policy, 10, almostOne)).toBe(999);
  });

  it('should spread delays over the whole range (full jitter)', () => {
    expect(retryDelayMs(policy, 3, () => 0)).toBe(0);
    expect(retryDelayMs(policy, 3, () => 0.5)).toBe(200);
  });

  it('should stay a number at the cap however many attempts were made (a message held for hours)', () => {
    const almostOne = () => 0.999999;
    expect(retryDelayMs(policy, 5_000, almostOne)).toBe(999);
    expect(retryDelayMs(retryPolicy({ initialDelayMs: 0, maxDelayMs: 1_000 }), 5_000, almostOne)).toBe(0);
  });
});

describe('withRetry', () => {
  const policy = retryPolicy({ maxAttempts: 4, initialDelayMs: 0, maxDelayMs: 0 });

  it('should retry a retryable failure until it succeeds', async () => {
    let calls = 0;
    const result = await withRetry(
      async () => {
        calls++;
        if (calls < 3) throw new UrsError('FLAKY', 'flaky', { canRetry: true });
        return 'ok';
      },
      { policy },
    );
    expect(result).toBe('ok');
    expect(calls).toBe(3);
  });

  it('should not retry an error that says it cannot be retried', async () => {
    let calls = 0;
    await expect(
      withRetry(
        async () => {
          calls++;
          throw new UrsError('POISON', 'bad input');
        },
        { policy },
      ),
    ).rejects.toThrow('bad input');
    expect(calls).toBe(1);
  });

  it('should give up after maxAttempts and rethrow the last error', async () => {
    let calls = 0;
    await expect(
      withRetry(
        async () => {
          calls++;
          throw new UrsError('DOWN', `down ${calls}`, { canRetry: true });
        },
        { policy },
      ),
    ).rejects.toThrow('down 4');
    expect(calls).toBe(4);
  });

  it('should wait the server-given delay when one is hinted', async () => {
    const waits: number[] = [];
    let calls = 0;
    await withRetry(
      async () => {
        if (++calls < 2) throw new UrsError('THROTTLED', 'slow down', { canRetry: true });
      },
      { policy, delayHintMs: () => 1234, sleep: async (ms) => void waits.push(ms) },
    );
    expect(waits).toEqual([1234]);
  });

  it('should make no attempt after a stop that comes while it waits to retry', async () => {
    const stop = new AbortController();
    let calls = 0;
    const retrying = withRetry(
      async () => {
        calls++;
        throw new UrsError('FLAKY', 'flaky', { canRetry: true });
      },
      {
        policy: retryPolicy({ maxAttempts: 4, initialDelayMs: 60_000, maxDelayMs: 60_000 }),
        signal: stop.signal,
        random: () => 1,
      },
    );
    retrying.catch(() => undefined);
    await new Promise((resolve) => setImmediate(resolve));
    expect(calls).toBe(1);
    stop.abort();
    await expect(retrying).rejects.toThrow('flaky');
    expect(calls).toBe(1);
  });
});

import { closeAll, keepRenewing } from '@urs/resilience';
import { waitFor } from '@urs/testkit';

describe('closeAll', () => {
  it('should close every resource in order even when one fails', async () => {
    const closed: string[] = [];
    const failures: string[] = [];
    await closeAll(
      [
        { name: 'consumer', close: async () => void closed.push('consumer') },
        {
          name: 'producer',
          close: async () => {
            throw new Error('broker gone');
          },
        },
        { name: 'redis', close: () => void closed.push('redis') },
      ],
      (name, error) => failures.push(`${name}: ${(error as Error).message}`),
    );
    expect(closed).toEqual(['consumer', 'redis']);
    expect(failures).toEqual(['producer: broker gone']);
  });
});

describe('keepRenewing', () => {
  it('should renew every interval until stopped, and say when the key was lost or a renewal failed', async () => {
    const answers: (boolean | Error)[] = [true, false, new Error('redis down'), true];
    let calls = 0;
    const events: string[] = [];
    const stop = keepRenewing(
      async () => {
        const answer = answers[calls++] ?? true;
        if (answer instanceof Error) throw answer;
        return answer;
      },
      10,
      { onLost: () => events.push('lost'), onError: (error) => events.push((error as Error).message) },
    );
    // Four renewals, however late a busy machine runs the timer (a fixed wait of five intervals saw two).
    await waitFor(() => calls >= 4, { intervalMs: 1, description: 'four renewals' });
    stop();
    const stoppedAt = calls;
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(calls).toBe(stoppedAt);
    expect(calls).toBeGreaterThanOrEqual(4);
    expect(events).toEqual(['lost', 'redis down']);
  });
});

describe('keepRenewing with a slow store', () => {
  /** A renewal whose answer the test gives. */
  function controllable() {
    const pending: ((held: boolean) => void)[] = [];
    const renew = () => new Promise<boolean>((resolve) => pending.push(resolve));
    return { renew, pending };
  }

  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('should send no renewal while the last one waits, and the next as soon as it answers', async () => {
    const { renew, pending } = controllable();
    const lost: number[] = [];
    const stop = keepRenewing(renew, 100, { onLost: () => lost.push(pending.length), onError: () => {} });
    try {
      await jest.advanceTimersByTimeAsync(100);
      expect(pending).toHaveLength(1);
      // Two ticks pass while Redis has not answered: no renewal beside it.
      await jest.advanceTimersByTimeAsync(250);
      expect(pending).toHaveLength(1);
      pending[0]?.(true);
      await jest.advanceTimersByTimeAsync(0);
      // A tick was missed: the next renewal goes at once, not a whole interval later.
      expect(pending).toHaveLength(2);
      // Its answer is the only one: an older renewal's "lost" cannot follow a newer success.
      pending[1]?.(false);
      await jest.advanceTimersByTimeAsync(0);
      expect(lost).toEqual([2]);
      await jest.advanceTimersByTimeAsync(100);
      expect(pending).toHaveLength(3);
    } finally {
      stop();
    }
  });

  it('should send no renewal after it was stopped, even when one answers late', async () => {
    const { renew, pending } = controllable();
    const stop = keepRenewing(renew, 100, { onError: () => {} });
    await jest.advanceTimersByTimeAsync(250);
    expect(pending).toHaveLength(1);
    stop();
    pending[0]?.(true);
    await jest.advanceTimersByTimeAsync(500);
    expect(pending).toHaveLength(1);
  });

  it('should call nothing when a renewal sent before it was stopped answers after', async () => {
    const pending: { resolve: (held: boolean) => void; reject: (error: Error) => void }[] = [];
    const renew = () => new Promise<boolean>((resolve, reject) => pending.push({ resolve, reject }));
    const events: string[] = [];
    const handlers = { onLost: () => events.push('lost'), onError: () => events.push('error') };
    // The work ended while its renewal waited on Redis: the key is given back, the late answer means nothing.
    const stopLost = keepRenewing(renew, 100, handlers, { immediately: true });
    const stopFailed = keepRenewing(renew, 100, handlers, { immediately: true });
    expect(pending).toHaveLength(2);
    stopLost();
    stopFailed();
    pending[0]?.resolve(false);
    pending[1]?.reject(new Error('redis timeout'));
    await jest.advanceTimersByTimeAsync(0);
    expect(events).toEqual([]);
  });

  it('should renew at once when asked to, then every interval', async () => {
    const { renew, pending } = controllable();
    const stop = keepRenewing(renew, 100, { onError: () => {} }, { immediately: true });
    try {
      expect(pending).toHaveLength(1);
      pending[0]?.(true);
      await jest.advanceTimersByTimeAsync(99);
      expect(pending).toHaveLength(1);
      await jest.advanceTimersByTimeAsync(1);
      expect(pending).toHaveLength(2);
    } finally {
      stop();
    }
  });
});

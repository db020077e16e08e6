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

import { sleep } from '@urs/resilience';
import { type LogLine, capturingLogger, waitFor } from '@urs/testkit';
import { createDeadlineSweep } from '../src/deadline-sweep';

describe('createDeadlineSweep', () => {
  it('createDeadlineSweep should sweep again after each sweep, until closed', async () => {
    let sweeps = 0;
    const lines: LogLine[] = [];
    const sweep = createDeadlineSweep({
      sweep: async () => {
        sweeps++;
        if (sweeps === 2) throw new Error('Redis refused');
      },
      everyMs: 5,
      logger: capturingLogger(lines),
    });
    sweep.start();
    await waitFor(() => sweeps >= 3);
    await sweep.close(100);
    const after = sweeps;
    await sleep(50);
    expect(sweeps).toBe(after);
    expect(lines).toMatchObject([
      { level: 'warn', message: 'deadline sweep failed', reason: 'Redis refused' },
    ]);
  });

  it('close should return within its bound while a sweep waits on a Redis that is away, and say so', async () => {
    const lines: LogLine[] = [];
    let swept = false;
    const sweep = createDeadlineSweep({
      // ioredis queues commands while Redis is away (maxRetriesPerRequest null): the sweep never answers.
      sweep: () => {
        swept = true;
        return new Promise<never>(() => undefined);
      },
      everyMs: 5,
      logger: capturingLogger(lines),
    });
    sweep.start();
    await waitFor(() => swept);
    const bound = new AbortController();
    const outcome = await Promise.race([
      sweep.close(100).then(() => 'closed'),
      sleep(2_000, bound.signal).then(() => 'still closing'),
    ]);
    // The bound's timer ends with the race: left running, it would hold the test run open.
    bound.abort();
    expect(outcome).toBe('closed');
    expect(lines).toMatchObject([{ level: 'warn', withinMs: 100 }]);
  });
});

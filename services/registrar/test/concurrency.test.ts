import { forEachLimit } from '../src/concurrency';

describe('forEachLimit', () => {
  it('forEachLimit should run every item with at most `limit` at once', async () => {
    let running = 0;
    let peak = 0;
    const done: number[] = [];
    await forEachLimit([...Array(20).keys()], 4, async (item) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((resolve) => setTimeout(resolve, item % 3));
      done.push(item);
      running--;
    });
    expect(peak).toBe(4);
    expect(done.sort((a, b) => a - b)).toEqual([...Array(20).keys()]);
  });

  it('forEachLimit should reject with the first failure and start nothing after it', async () => {
    const started: number[] = [];
    const failure = new Error('boom');
    await expect(
      forEachLimit([0, 1, 2, 3, 4, 5], 2, async (item) => {
        started.push(item);
        if (item === 1) throw failure;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }),
    ).rejects.toBe(failure);
    expect(started).toEqual([0, 1]);
  });
});

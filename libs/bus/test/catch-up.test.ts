import { createCatchUp, stopWaitingAfter } from '../src/read-to-end';

describe('stopWaitingAfter', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('should stop a reader that did not reach its end in time waiting, telling how many partitions were behind', () => {
    const catchUp = createCatchUp();
    catchUp.expectEnd(
      new Map([
        [0, 3n],
        [1, 5n],
      ]),
    );
    catchUp.read(0, '3');
    const behind: number[] = [];
    stopWaitingAfter(catchUp, 1_000, (count) => behind.push(count));
    jest.advanceTimersByTime(999);
    expect([catchUp.caughtUp(), behind]).toEqual([false, []]);
    jest.advanceTimersByTime(1);
    expect([catchUp.caughtUp(), behind]).toEqual([true, [1]]);
  });

  it('should tell nothing of a reader that reached its end in time, nor stop one once cancelled', () => {
    const caughtUp = createCatchUp();
    caughtUp.expectEnd(new Map([[0, 2n]]));
    caughtUp.read(0, '2');
    const told: number[] = [];
    stopWaitingAfter(caughtUp, 1_000, (count) => told.push(count));
    const stalled = createCatchUp();
    stalled.expectEnd(new Map([[0, 2n]]));
    stopWaitingAfter(stalled, 1_000, (count) => told.push(count))();
    jest.advanceTimersByTime(5_000);
    expect([told, stalled.caughtUp()]).toEqual([[], false]);
  });
});

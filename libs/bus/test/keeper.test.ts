import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import { createConsumerKeeper } from '../src/keeper';

const outage = Object.assign(new Error('Connection error: connect ECONNREFUSED'), {
  name: 'KafkaJSConnectionError',
  code: 'ECONNREFUSED',
});
const refused = Object.assign(new Error('Not authorized to access group'), {
  name: 'KafkaJSProtocolError',
  type: 'GROUP_AUTHORIZATION_FAILED',
});

function keeper(run: () => Promise<void>) {
  return createConsumerKeeper({
    groupId: 'group',
    log: silentLogger,
    restart: retryPolicy({ maxAttempts: Infinity, initialDelayMs: 100, maxDelayMs: 100 }),
    run,
  });
}

describe('createConsumerKeeper', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('should restart a consumer stopped by an outage until it joins again, and say when it is up', async () => {
    const run = jest.fn<Promise<void>, []>().mockResolvedValue(undefined);
    const kept = keeper(run);
    kept.joined();
    expect(kept.isUp()).toBe(true);
    kept.crashed(outage);
    expect(kept.isUp()).toBe(false);
    await jest.advanceTimersByTimeAsync(100);
    expect(run).toHaveBeenCalledTimes(1);
    // The restart's run() failing is another crash: restarted again.
    run.mockRejectedValueOnce(outage);
    kept.crashed(outage);
    await jest.advanceTimersByTimeAsync(100);
    await jest.advanceTimersByTimeAsync(100);
    expect(run).toHaveBeenCalledTimes(3);
    kept.joined();
    expect(kept.isUp()).toBe(true);
  });

  it('should say it is not up once its broker answered nothing for 10 s', async () => {
    const kept = keeper(async () => undefined);
    kept.joined();
    await jest.advanceTimersByTimeAsync(9_000);
    kept.answered();
    await jest.advanceTimersByTimeAsync(9_000);
    expect(kept.isUp()).toBe(true);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(kept.isUp()).toBe(false);
  });

  it('should stay up while a slow broker still answers, each answer ~10 s after the one before', async () => {
    const kept = keeper(async () => undefined);
    kept.joined();
    // Its join was answered as slowly.
    kept.answered({ apiName: 'Fetch', duration: 10_000 });
    for (let answer = 0; answer < 6; answer++) {
      // The request after an answer is sent at once, and answered 10 s later (a fetch waits 0.5 s more).
      await jest.advanceTimersByTimeAsync(10_500);
      expect(kept.isUp()).toBe(true);
      kept.answered({ apiName: 'Fetch', duration: 10_000 });
    }
  });

  it('should say a slow broker that stopped answering is not up, 10 s after an answer was due', async () => {
    const kept = keeper(async () => undefined);
    kept.joined();
    kept.answered({ apiName: 'Fetch', duration: 10_000 });
    await jest.advanceTimersByTimeAsync(19_000);
    expect(kept.isUp()).toBe(true);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(kept.isUp()).toBe(false);
  });

  it('should not take a join that waited for its group as a slow broker', async () => {
    const kept = keeper(async () => undefined);
    kept.joined();
    // JoinGroup and SyncGroup are answered when the group is ready (up to its rebalance timeout): their time
    // is the other members', not the broker's.
    kept.answered({ apiName: 'JoinGroup', duration: 25_000 });
    kept.answered({ apiName: 'SyncGroup', duration: 20_000 });
    await jest.advanceTimersByTimeAsync(10_000);
    expect(kept.isUp()).toBe(false);
  });

  it('should go back to the 10 s bar once its broker answers fast again for a minute', async () => {
    const kept = keeper(async () => undefined);
    kept.joined();
    kept.answered({ apiName: 'Fetch', duration: 10_000 });
    for (let second = 0; second < 61; second++) {
      await jest.advanceTimersByTimeAsync(1_000);
      kept.answered({ apiName: 'Fetch', duration: 0 });
    }
    await jest.advanceTimersByTimeAsync(10_000);
    expect(kept.isUp()).toBe(false);
  });

  it('should fail for good on a crash that waiting does not mend, restarting nothing', async () => {
    const run = jest.fn(async () => undefined);
    const kept = keeper(run);
    kept.crashed(refused);
    await expect(kept.failed()).resolves.toMatchObject({ code: 'CONSUMER_STOPPED', canRetry: false });
    await jest.advanceTimersByTimeAsync(1_000);
    expect(run).not.toHaveBeenCalled();
  });

  it('should restart nothing once stopped', async () => {
    const run = jest.fn(async () => undefined);
    const kept = keeper(run);
    kept.crashed(outage);
    void kept.stop(1_000);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(run).not.toHaveBeenCalled();
  });
});

describe('createConsumerKeeper stopping while a restart is joining', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  /** A keeper whose restarts join when `join` is called; `runs` counts the restarts begun. */
  function joining() {
    let join: () => void = () => undefined;
    const run = jest.fn(() => new Promise<void>((resolve) => (join = resolve)));
    return { kept: keeper(run), run, join: () => join() };
  }

  it('should wait for the restart in flight before it says it stopped', async () => {
    const { kept, run, join } = joining();
    kept.crashed(outage);
    await jest.advanceTimersByTimeAsync(100);
    expect(run).toHaveBeenCalledTimes(1);
    let stopped: boolean | undefined;
    void kept.stop(5_000).then((settled) => (stopped = settled));
    await jest.advanceTimersByTimeAsync(1_000);
    expect(stopped).toBeUndefined();
    join();
    await jest.advanceTimersByTimeAsync(0);
    expect(stopped).toBe(true);
    await jest.advanceTimersByTimeAsync(10_000);
    expect(run).toHaveBeenCalledTimes(1);
  });

  it('should stop waiting after its budget, saying so, and settle joining() once the run does', async () => {
    const { kept, join } = joining();
    kept.crashed(outage);
    await jest.advanceTimersByTimeAsync(100);
    const stopping = kept.stop(1_000);
    await jest.advanceTimersByTimeAsync(1_000);
    await expect(stopping).resolves.toBe(false);
    let restarted = false;
    void kept.joining().then(() => (restarted = true));
    await jest.advanceTimersByTimeAsync(0);
    expect(restarted).toBe(false);
    join();
    await jest.advanceTimersByTimeAsync(0);
    expect(restarted).toBe(true);
  });

  it('should restart nothing after a restart in flight failed once stopped', async () => {
    const run = jest.fn<Promise<void>, []>();
    let fail: (error: Error) => void = () => undefined;
    run.mockImplementationOnce(() => new Promise<void>((_, reject) => (fail = reject)));
    const kept = keeper(run);
    kept.crashed(outage);
    await jest.advanceTimersByTimeAsync(100);
    const stopping = kept.stop(5_000);
    fail(outage);
    await expect(stopping).resolves.toBe(true);
    await jest.advanceTimersByTimeAsync(10_000);
    expect(run).toHaveBeenCalledTimes(1);
  });
});

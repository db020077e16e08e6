import { silentLogger } from '@urs/logging';
import { isInfrastructureFault, UrsError } from '@urs/resilience';
import type { PublishedRebuild } from '@urs/store';
import { waitFor } from '@urs/testkit';
import { createPublishedRebuilder, type VmsKeysReader } from '../src/rebuild';

/** A Redis that never held the marker, where this replica always gets the right to rebuild. */
const unrebuilt = (): PublishedRebuild => ({
  isRebuilt: async () => false,
  takeRebuild: async () => true,
  renewRebuild: async () => true,
  releaseRebuild: async () => undefined,
  restore: async () => 0,
  markRebuilt: async () => true,
});

/** The rebuild's lock and marker as the store keeps them (a token owns the lock), in a Redis a test can wipe. */
function lockAndMarker() {
  const redis = { lock: undefined as string | undefined, rebuilt: false, takes: 0, released: [] as string[] };
  const published: PublishedRebuild = {
    isRebuilt: async () => redis.rebuilt,
    takeRebuild: async (token) => {
      redis.takes++;
      if (redis.rebuilt || (redis.lock !== undefined && redis.lock !== token)) return false;
      redis.lock = token;
      return true;
    },
    renewRebuild: async (token) => redis.lock === token,
    releaseRebuild: async (token) => {
      redis.released.push(token);
      if (redis.lock === token) redis.lock = undefined;
    },
    restore: async () => 0,
    markRebuilt: async (token) => {
      if (redis.lock !== token) return false;
      redis.rebuilt = true;
      redis.lock = undefined;
      return true;
    },
  };
  const wipe = (): void => {
    redis.lock = undefined;
    redis.rebuilt = false;
  };
  return { redis, published, wipe };
}

/** A reader whose reads last until released (or their signal aborts); each read is kept in `reads`. */
function heldReader() {
  const reads: { signal: AbortSignal | undefined; release: () => void }[] = [];
  const readKeys: VmsKeysReader = (_onKeys, signal?: AbortSignal) =>
    new Promise<number>((resolve, reject) => {
      reads.push({ signal, release: () => resolve(0) });
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
  return { reads, readKeys };
}

describe('createPublishedRebuilder', () => {
  it('ensure should hand on a read Kafka refused for good as retryable, so the batch waiting on it is not dead-lettered', async () => {
    const refused = new UrsError('CONSUMER_STOPPED', 'reading vms.risk-scores: not authorized', {
      canRetry: false,
    });
    const rebuild = createPublishedRebuilder({
      published: unrebuilt(),
      readKeys: async () => {
        throw refused;
      },
      logger: silentLogger,
    });
    await expect(rebuild.ensure()).rejects.toMatchObject({
      code: 'REBUILD_FAILED',
      canRetry: true,
      cause: refused,
      message: expect.stringMatching(/not authorized/),
    });
  });

  it('ensure should reject a failed rebuild as an infrastructure fault: the message waiting on it is held, never counted against its retries', async () => {
    const rebuild = createPublishedRebuilder({
      published: unrebuilt(),
      readKeys: async () => {
        throw new UrsError('CONSUMER_STOPPED', 'reading vms.risk-scores: not authorized', {
          canRetry: false,
        });
      },
      logger: silentLogger,
    });
    const error: unknown = await rebuild.ensure().catch((failure: unknown) => failure);
    expect(isInfrastructureFault(error)).toBe(true);
  });

  it('should not read the topic again right after a failed rebuild, but answer with that failure until its backoff passed', async () => {
    let reads = 0;
    const rebuild = createPublishedRebuilder({
      published: unrebuilt(),
      readKeys: async () => {
        reads++;
        throw new UrsError('CONSUMER_STOPPED', 'reading vms.risk-scores: not authorized', {
          canRetry: false,
        });
      },
      logger: silentLogger,
    });
    await expect(rebuild.ensure()).rejects.toMatchObject({ code: 'REBUILD_FAILED' });
    await expect(rebuild.ensure()).rejects.toMatchObject({
      code: 'REBUILD_FAILED',
      message: expect.stringMatching(/not authorized/),
    });
    expect(reads).toBe(1);
  });

  it('a caller joining the rebuild under way should give up once its signal aborts', async () => {
    const { reads, readKeys } = heldReader();
    const rebuild = createPublishedRebuilder({
      published: lockAndMarker().published,
      readKeys,
      logger: silentLogger,
    });
    const first = rebuild.ensure();
    await waitFor(() => reads.length === 1);
    const stop = new AbortController();
    const joined = rebuild.ensure(stop.signal);
    const reason = new Error('the caller gave up');
    stop.abort(reason);
    await expect(joined).rejects.toBe(reason);
    expect(reads[0]?.signal?.aborted).toBe(false);
    reads[0]?.release();
    await first;
  });

  it('a caller finding the marker missing and the lock no longer held by the rebuild under way should start another, and stop the first', async () => {
    const { redis, published, wipe } = lockAndMarker();
    const { reads, readKeys } = heldReader();
    const rebuild = createPublishedRebuilder({ published, readKeys, logger: silentLogger });
    const first = rebuild.ensure();
    await waitFor(() => reads.length === 1);
    wipe();
    const second = rebuild.ensure();
    await waitFor(() => reads.length === 2);
    expect(reads[0]?.signal?.aborted).toBe(true);
    reads[1]?.release();
    await Promise.all([first, second]);
    expect(redis.rebuilt).toBe(true);
  });

  it('should stop reading once its lock lapsed, and rebuild again', async () => {
    const { redis, published, wipe } = lockAndMarker();
    const { reads, readKeys } = heldReader();
    const rebuild = createPublishedRebuilder({ published, readKeys, logger: silentLogger, lockMs: 30 });
    const rebuilt = rebuild.ensure();
    await waitFor(() => reads.length === 1);
    wipe();
    await waitFor(() => reads.length === 2);
    expect(reads[0]?.signal?.aborted).toBe(true);
    reads[1]?.release();
    await rebuilt;
    expect(redis.rebuilt).toBe(true);
  });

  it("callers waiting for another replica's rebuild should share one look at Redis", async () => {
    const { redis, published } = lockAndMarker();
    redis.lock = 'another replica';
    const rebuild = createPublishedRebuilder({
      published,
      readKeys: heldReader().readKeys,
      logger: silentLogger,
      waitMs: 3_600_000,
    });
    const stop = new AbortController();
    const waiting = [rebuild.ensure(stop.signal), rebuild.ensure(stop.signal), rebuild.ensure(stop.signal)];
    await waitFor(() => redis.takes > 0);
    const reason = new Error('the callers gave up');
    stop.abort(reason);
    for (const caller of waiting) await expect(caller).rejects.toBe(reason);
    expect(redis.takes).toBe(1);
    await rebuild.close();
  });

  it('close should stop the rebuild under way (its read) and give its lock back', async () => {
    const { redis, published } = lockAndMarker();
    const { reads, readKeys } = heldReader();
    const rebuild = createPublishedRebuilder({ published, readKeys, logger: silentLogger });
    const rebuilding = rebuild.ensure();
    await waitFor(() => reads.length === 1);
    await rebuild.close();
    expect(reads[0]?.signal?.aborted).toBe(true);
    expect(redis.lock).toBeUndefined();
    expect(redis.released).toHaveLength(1);
    // A fault of the infrastructure, not of the message waiting on it: the replica is stopping.
    const error: unknown = await rebuilding.catch((failure: unknown) => failure);
    expect(error).toMatchObject({
      code: 'REBUILD_FAILED',
      cause: expect.objectContaining({ code: 'STOPPING' }),
    });
    expect(isInfrastructureFault(error)).toBe(true);
    expect(redis.rebuilt).toBe(false);
  });
});

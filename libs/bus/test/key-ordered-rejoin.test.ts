import type { Consumer, EachBatchPayload, KafkaMessage, Offsets } from 'kafkajs';
import type { MessageWork } from '../src/handle';
import { createKeyOrderedConsumption, type KeyOrderedConsumption } from '../src/key-ordered';
import { TOPIC, joinedAs as joined, keyOrderedOptions } from './key-ordered-support';

/**
 * A key-ordered consumption whose handler notes each message it is handed ("partition@offset") and
 * finishes it at once, unless `hold` holds it until released; what is committed goes to `commits`.
 */
function consumption(hold: (work: MessageWork) => Promise<void> = async () => undefined) {
  const handled: string[] = [];
  const commits: string[] = [];
  // Commits are made by drain alone, so a test sees every offset committed.
  const keyed = createKeyOrderedConsumption(
    keyOrderedOptions(async (work) => {
      handled.push(`${work.partition}@${work.message.offset}`);
      await hold(work);
      return true;
    }),
  );
  /** A batch of `partition` holding `count` messages of keys k0, k1, ... at offsets `from`, `from + 1`, ... */
  const batch = (partition: number, from: number, count: number): EachBatchPayload =>
    ({
      batch: {
        topic: TOPIC,
        partition,
        messages: Array.from(
          { length: count },
          (_, i) => ({ key: Buffer.from(`k${i}`), offset: String(from + i) }) as KafkaMessage,
        ),
        lastOffset: () => String(from + count - 1),
        highWatermark: String(from + count),
      },
      resolveOffset: () => undefined,
      isRunning: () => true,
      isStale: () => false,
      heartbeat: async () => undefined,
      commitOffsetsIfNecessary: async (offsets: Offsets) => {
        for (const topic of offsets.topics) {
          for (const { partition, offset } of topic.partitions) commits.push(`${partition}@${offset}`);
        }
      },
    }) as unknown as EachBatchPayload;
  return { keyed, handled, commits, batch };
}

/** Lets the handlers started run to their end. */
const settled = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The session expired: the member's commits were refused, and it joins again under a new member id. */
function forgotten(keyed: KeyOrderedConsumption, partitions: number[]): void {
  keyed.onGroupJoin(joined('member-2', partitions));
}

describe('createKeyOrderedConsumption after the group forgot this member', () => {
  it('should not hand finished messages to the handler again when the same partition is assigned back and fetched from a stale committed offset', async () => {
    const { keyed, handled, commits, batch } = consumption();
    keyed.onGroupJoin(joined('member-1', [0]));
    await keyed.eachBatch(batch(0, 0, 3));
    await settled();
    forgotten(keyed, [0]);
    // Nothing of it was committed: the partition is fetched again from offset 0, with two new messages.
    await keyed.eachBatch(batch(0, 0, 5));
    await settled();
    await keyed.drain();
    expect(handled).toEqual(['0@0', '0@1', '0@2', '0@3', '0@4']);
    expect(commits).toEqual(['0@5']);
  });

  it('should commit the finished watermark of a partition assigned back even when its first batch since holds only finished messages', async () => {
    const { keyed, commits, batch } = consumption();
    keyed.onGroupJoin(joined('member-1', [0]));
    await keyed.eachBatch(batch(0, 0, 3));
    await settled();
    forgotten(keyed, [0]);
    await keyed.eachBatch(batch(0, 0, 2));
    await keyed.drain();
    expect(commits).toEqual(['0@3']);
  });

  it('should hand a message unfinished when the member was forgotten to the handler again, and commit nothing past it', async () => {
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    let heldOnce = false;
    const { keyed, handled, commits, batch } = consumption(async (work) => {
      if (work.message.offset !== '1' || heldOnce) return;
      heldOnce = true;
      await released;
    });
    keyed.onGroupJoin(joined('member-1', [0]));
    await keyed.eachBatch(batch(0, 0, 3));
    await settled();
    forgotten(keyed, [0]);
    release();
    await settled();
    await keyed.eachBatch(batch(0, 0, 3));
    await settled();
    await keyed.drain();
    expect(handled).toEqual(['0@0', '0@1', '0@2', '0@1', '0@2']);
    expect(commits).toEqual(['0@3']);
  });

  it('should not commit the finished watermark of a partition assigned back before it is fetched again, as the group may have committed past it', async () => {
    const { keyed, commits, batch } = consumption();
    keyed.onGroupJoin(joined('member-1', [0]));
    await keyed.eachBatch(batch(0, 0, 2));
    await settled();
    forgotten(keyed, [0]);
    await keyed.drain();
    expect(commits).toEqual([]);
  });

  it('should never commit behind the offset another member committed while it owned the partition', async () => {
    const { keyed, handled, commits, batch } = consumption();
    keyed.onGroupJoin(joined('member-1', [0]));
    await keyed.eachBatch(batch(0, 0, 2));
    await settled();
    forgotten(keyed, [0]);
    // Another member committed 4 meanwhile: the partition is fetched from there.
    await keyed.eachBatch(batch(0, 4, 2));
    await settled();
    await keyed.drain();
    expect(handled).toEqual(['0@0', '0@1', '0@4', '0@5']);
    expect(commits).toEqual(['0@6']);
  });

  it('should give up the finished messages of a partition not assigned back', async () => {
    const { keyed, handled, batch } = consumption();
    keyed.onGroupJoin(joined('member-1', [0, 1]));
    await keyed.eachBatch(batch(1, 0, 2));
    await settled();
    forgotten(keyed, [0]);
    // Back here later, the partition is read from the offset its owner meanwhile committed, handled anew.
    keyed.onGroupJoin(joined('member-2', [0, 1]));
    await keyed.eachBatch(batch(1, 0, 2));
    await settled();
    await keyed.drain();
    expect(handled).toEqual(['1@0', '1@1', '1@0', '1@1']);
  });
});

/**
 * Partition 0 fetched as KafkaJS 2.2.4 fetches it: from the offset the last batch resolved, or, after a
 * rebalance (a new offset manager), from the committed offset, here 0 as the tests commit only on drain; a
 * seek moves the next fetch, and a batch fetched before it is stale until then (KafkaJS's hasSeekOffset).
 * Each fetch brings the messages from its offset up to `end`.
 */
function fetchedAsKafkaJs(hold: (work: MessageWork) => Promise<void>) {
  const handled: string[] = [];
  const commits: string[] = [];
  let resolved: number | undefined;
  let sought: number | undefined;
  const consumer = {
    pause: () => undefined,
    resume: () => undefined,
    seek: ({ offset }: { offset: string }) => void (sought = Number(offset)),
  } as unknown as Consumer;
  const keyed = createKeyOrderedConsumption(
    keyOrderedOptions(
      async (work) => {
        handled.push(`${work.partition}@${work.message.offset}`);
        await hold(work);
        return true;
      },
      { consumer },
    ),
  );
  return {
    keyed,
    handled,
    commits,
    /** GROUP_JOIN under `memberId`: KafkaJS built a new offset manager, which forgot the resolved offsets. */
    join(memberId: string): void {
      resolved = undefined;
      keyed.onGroupJoin(joined(memberId, [0]));
    },
    fetch(end: number): EachBatchPayload {
      if (sought !== undefined) resolved = sought;
      sought = undefined;
      const from = resolved ?? 0;
      return {
        batch: {
          topic: TOPIC,
          partition: 0,
          messages: Array.from(
            { length: end - from },
            (_, i) => ({ key: Buffer.from(`k${from + i}`), offset: String(from + i) }) as KafkaMessage,
          ),
          lastOffset: () => String(end - 1),
          highWatermark: String(end),
        },
        resolveOffset: (offset: string) => void (resolved = Number(offset) + 1),
        isRunning: () => true,
        isStale: () => sought !== undefined,
        heartbeat: async () => undefined,
        commitOffsetsIfNecessary: async (offsets: Offsets) => {
          for (const topic of offsets.topics) {
            for (const { partition, offset } of topic.partitions) commits.push(`${partition}@${offset}`);
          }
        },
      } as unknown as EachBatchPayload;
    },
  };
}

describe('createKeyOrderedConsumption after the group forgot this member from inside a fetch', () => {
  it('should hand a message unfinished at the rejoin to the handler again when a batch fetched before the rejoin is handed over after it', async () => {
    let heldOnce = false;
    // Offset 1 runs until its partition is given up.
    const { keyed, handled, commits, join, fetch } = fetchedAsKafkaJs(async (work) => {
      if (work.message.offset !== '1' || heldOnce) return;
      heldOnce = true;
      await new Promise<void>((resolve) => work.signal?.addEventListener('abort', () => resolve()));
    });
    join('member-1');
    await keyed.eachBatch(fetch(3));
    await settled();
    // Another broker's fetcher fetched the partition from where it was read to, 3; its batch is handed over
    // after the rejoin (KafkaJS rejoins from inside a fetch, the other fetchers running on), which assigns the
    // partition back under a new member id.
    const fetchedBeforeTheRejoin = fetch(5);
    join('member-2');
    await settled();
    await keyed.eachBatch(fetchedBeforeTheRejoin);
    await settled();
    await keyed.eachBatch(fetch(7));
    await settled();
    await keyed.drain();
    expect(handled.filter((offset) => offset === '0@1')).toHaveLength(2);
    expect([...new Set(handled)].sort()).toEqual(['0@0', '0@1', '0@2', '0@3', '0@4', '0@5', '0@6']);
    expect(commits).toEqual(['0@7']);
  });
});

describe('createKeyOrderedConsumption after its consumer crashed', () => {
  it('should abort the handlers of every partition at the crash, and not hand finished messages to the handler again once joined again', async () => {
    const aborted: string[] = [];
    const { keyed, handled, commits, batch } = consumption(async (work) => {
      // Offset 1 of each partition runs until its partition is given up.
      if (work.message.offset !== '1' || handled.filter((h) => h === `${work.partition}@1`).length > 1)
        return;
      await new Promise<void>((resolve) =>
        work.signal?.addEventListener('abort', () => {
          aborted.push(`${work.partition}@1`);
          resolve();
        }),
      );
    });
    keyed.onGroupJoin(joined('member-1', [0, 1]));
    await keyed.eachBatch(batch(0, 0, 3));
    await keyed.eachBatch(batch(1, 0, 3));
    await settled();
    keyed.onCrash();
    await settled();
    expect(aborted).toEqual(['0@1', '1@1']);
    // The restart joined with the member id it kept; nothing was committed, so each is fetched from offset 0.
    keyed.onGroupJoin(joined('member-1', [0, 1]));
    await keyed.eachBatch(batch(0, 0, 3));
    await keyed.eachBatch(batch(1, 0, 3));
    await settled();
    await keyed.drain();
    expect(handled).toEqual(['0@0', '0@1', '0@2', '1@0', '1@1', '1@2', '0@1', '0@2', '1@1', '1@2']);
    expect(commits.sort()).toEqual(['0@3', '1@3']);
  });
});

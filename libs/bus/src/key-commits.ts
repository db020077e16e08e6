import type { Offsets, PartitionOffset } from 'kafkajs';
import type { Logger } from '@urs/logging';
import { errorCode, errorMessage } from '@urs/resilience';
import type { PartitionOffsets } from './watermark';

/*
 * How ordering 'key' commits, on KafkaJS 2.2.4 (see key-ordered.ts for the rest):
 * - Resolved offsets run ahead of finished work (a message is resolved when it is accepted), so KafkaJS's
 *   autoCommit is off and the contiguous finished watermark of each partition is committed here, at most
 *   once per interval.
 * - consumer.commitOffsets tries a failed commit again (a timeout, a lost connection; not a refusal
 *   by generation) under the member's generation of the moment: sent before a rebalance and tried
 *   again after it, it gives a partition that went to another member an older offset over its new
 *   owner's. So commits go through a batch's commitOffsetsIfNecessary instead (the same commit,
 *   tried once); a failed commit is made again at the next interval, of the partitions assigned then.
 * - A commit needs the member in its group, which disconnect leaves, so close drains and commits
 *   before it disconnects.
 */

/** A partition as the commits see it: its finished watermark, and the offset last committed of it. */
export interface CommittedPartition {
  readonly topic: string;
  readonly partition: number;
  readonly lanes: { readonly offsets: PartitionOffsets };
  committed: bigint | undefined;
}

export interface WatermarkCommitsOptions<P extends CommittedPartition> {
  log: Logger;
  /** How soon a finished message's offset is committed, ms. */
  intervalMs: number;
  /** The partitions worked on here. */
  partitions: () => Iterable<P>;
  /** Whether the last rebalance assigned the partition to this member: only those are committed. */
  isAssigned: (work: P) => boolean;
}

export interface WatermarkCommits {
  /** The commit of the last batch: once, under the member's generation of the moment. */
  use(commit: (offsets: Offsets) => Promise<void>): void;
  /** A watermark moved: commits within the interval. */
  schedule(): void;
  /** Commits now (after the one under way) every partition whose watermark moved. */
  flush(): Promise<void>;
  /** Schedules nothing more (close commits once more itself, with flush). */
  stop(): void;
}

/** Partitions' offsets to commit, by topic, as KafkaJS takes them. */
function byTopic(due: readonly { work: CommittedPartition; offset: bigint }[]): Offsets {
  const topics = new Map<string, PartitionOffset[]>();
  for (const { work, offset } of due) {
    const offsets = topics.get(work.topic) ?? [];
    offsets.push({ partition: work.partition, offset: offset.toString() });
    topics.set(work.topic, offsets);
  }
  return { topics: [...topics].map(([topic, partitions]) => ({ topic, partitions })) };
}

/** Commits the finished watermarks of ordering 'key', one commit at a time. */
export function createWatermarkCommits<P extends CommittedPartition>(
  options: WatermarkCommitsOptions<P>,
): WatermarkCommits {
  const { log } = options;
  let commit: (offsets: Offsets) => Promise<void> = async () => undefined;
  let timer: NodeJS.Timeout | undefined;
  let committing: Promise<void> | undefined;
  let stopped = false;

  function schedule(): void {
    if (timer || stopped) return;
    timer = setTimeout(() => {
      timer = undefined;
      void flush();
    }, options.intervalMs);
    timer.unref();
  }

  /**
   * Partitions whose watermark moved since their last commit, of those assigned here now: a batch
   * fetched before a rebalance may still be handed over after it, and an offset committed for a
   * partition that moved would be taken over its new owner's.
   */
  function dueForCommit(): { work: P; offset: bigint }[] {
    return [...options.partitions()].flatMap((work) => {
      const offset = work.lanes.offsets.watermark();
      const due = options.isAssigned(work) && offset !== undefined && offset !== work.committed;
      return due ? [{ work, offset }] : [];
    });
  }

  async function commitDue(): Promise<void> {
    const due = dueForCommit();
    if (due.length === 0) return;
    try {
      await commit(byTopic(due));
      for (const { work, offset } of due) work.committed = offset;
    } catch (error) {
      // A rebalance under way refuses commits of the old generation; the next commit carries those of
      // the partitions still assigned then.
      log.warn('offsets not committed, trying again', {
        code: errorCode(error),
        reason: errorMessage(error),
      });
      schedule();
    }
  }

  async function flush(): Promise<void> {
    while (committing) await committing;
    committing = commitDue().finally(() => {
      committing = undefined;
    });
    return committing;
  }

  return {
    use(next) {
      commit = next;
    },
    schedule,
    flush,
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
  };
}

import type Redis from 'ioredis';
import type { VulnerabilitySummary } from '@urs/contracts';
import { replies } from './replies';

/** A per-device batch's calls answered by an earlier try of it, here or on another replica. */
export interface KeptAnswers {
  /** Each answered device's summary, by device id. */
  summaries: Map<string, VulnerabilitySummary>;
  /** When the last of them was answered (ISO 8601). */
  collectedAt: string;
}

/** One device's answered call: its summary, and when the call was answered (ISO 8601). */
export interface AnsweredCall {
  deviceId: string;
  summary: VulnerabilitySummary;
  at: string;
}

/**
 * The Defender calls a per-device batch has had answered, kept until the batch is sent, so that its next
 * try (after a fault of Redis or Kafka, a stop, a crash, on any replica) asks only for the other devices.
 */
export interface AnsweredCalls {
  /**
   * The batch's kept answers, null when none are kept; their expiry starts again, so a batch held and tried
   * again (a Kafka outage) keeps them for as long as it is tried.
   */
  read(tenantId: string, cycleId: string, batchIndex: number): Promise<KeptAnswers | null>;
  /**
   * Keeps devices' answered calls, in one round trip: the batch's `collectedAt` becomes the latest `at` kept.
   * Its expiry starts again.
   */
  keep(tenantId: string, cycleId: string, batchIndex: number, calls: readonly AnsweredCall[]): Promise<void>;
  /** Lets go of the batch's answers (it was sent). */
  forget(tenantId: string, cycleId: string, batchIndex: number): Promise<void>;
}

/**
 * How long a batch's answers are kept after they were last written or read, in milliseconds: a batch not
 * tried again within it (dead-lettered, or its cycle ended) lets them expire. A held batch is retried with a
 * backoff capped well below it, and a batch taken over after its holder stopped or died is tried again within
 * its claim's 60 s.
 */
const ANSWERED_CALLS_TTL_MS = 15 * 60_000;

/** One device's answered call as stored: the summary, and when the call was answered (ISO 8601). */
interface StoredAnswer {
  at: string;
  summary: VulnerabilitySummary;
}

/**
 * A per-device batch's answered calls: `{prefix}vuln-answers:{tenantId}:{cycleId}:{batchIndex}` (hash
 * deviceId → `{at, summary}` JSON), expiring `ttlMs` (default 15 minutes) after it was last written or read.
 * Each answer carries its own time, and the batch's `collectedAt` is the latest of them: right whatever
 * order the writes of two replicas (one that lost the batch, one that took it over) reach Redis in. Only
 * batches tried and not yet sent hold any.
 */
export function createAnsweredCalls(
  redis: Redis,
  prefix: string,
  ttlMs = ANSWERED_CALLS_TTL_MS,
): AnsweredCalls {
  const batchKey = (tenantId: string, cycleId: string, batchIndex: number): string =>
    `${prefix}vuln-answers:${tenantId}:${cycleId}:${batchIndex}`;
  return {
    async read(tenantId, cycleId, batchIndex) {
      const key = batchKey(tenantId, cycleId, batchIndex);
      // A pipeline, not a transaction: a Redis out of memory still answers the read.
      const [stored] = await replies(redis.pipeline().hgetall(key).pexpire(key, ttlMs));
      const fields = (stored ?? {}) as Record<string, string>;
      const summaries = new Map<string, VulnerabilitySummary>();
      let collectedAt = '';
      for (const [deviceId, json] of Object.entries(fields)) {
        const answer = JSON.parse(json) as StoredAnswer;
        summaries.set(deviceId, answer.summary);
        // ISO 8601 times in UTC compare as strings.
        if (answer.at > collectedAt) collectedAt = answer.at;
      }
      return summaries.size > 0 ? { summaries, collectedAt } : null;
    },
    async keep(tenantId, cycleId, batchIndex, calls) {
      if (calls.length === 0) return;
      const key = batchKey(tenantId, cycleId, batchIndex);
      const fields = calls.flatMap(({ deviceId, summary, at }) => {
        const answer: StoredAnswer = { at, summary };
        return [deviceId, JSON.stringify(answer)];
      });
      // The expiry goes with every write, so the answers of a batch never tried again end.
      await replies(
        redis
          .pipeline()
          .hset(key, ...fields)
          .pexpire(key, ttlMs),
      );
    },
    async forget(tenantId, cycleId, batchIndex) {
      await redis.del(batchKey(tenantId, cycleId, batchIndex));
    },
  };
}

import { Kafka, logLevel, type Consumer } from 'kafkajs';
import type { VmsRiskSummary } from '@urs/contracts';

export function createBenchKafka(brokers: string[], clientId: string): Kafka {
  for (const broker of brokers) {
    if (!/^(127\.0\.0\.1|localhost|\[::1\]):\d+$/.test(broker))
      throw new Error(`the bench only talks to loopback brokers, not ${broker}`);
  }
  return new Kafka({ clientId, brokers, logLevel: logLevel.NOTHING });
}

/** A summary record with its Kafka timestamp (ms, producer CreateTime). */
export interface SummaryRecord {
  value: VmsRiskSummary;
  timestampMs: number;
}

/** Watches `vms.risk-summary` while scenarios run, so the bench knows when a cycle completed. */
export interface SummaryWatcher {
  /**
   * Resolves when every tenant has a summary (the first one of each, of a cycle not in `besides`), or
   * rejects after `timeoutMs`.
   */
  waitFor(
    tenantIds: string[],
    timeoutMs: number,
    abort?: () => string | undefined,
    besides?: ReadonlySet<string>,
  ): Promise<Map<string, SummaryRecord>>;
  all(): SummaryRecord[];
  close(): Promise<void>;
}

export async function watchSummaries(kafka: Kafka, topic: string, groupId: string): Promise<SummaryWatcher> {
  const records: SummaryRecord[] = [];
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100, allowAutoTopicCreation: false });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let joined: () => void = () => undefined;
  const isJoined = new Promise<void>((resolve) => (joined = resolve));
  consumer.on(consumer.events.GROUP_JOIN, () => joined());
  await consumer.run({
    eachMessage: async ({ message }) => {
      if (!message.value) return;
      records.push({
        value: JSON.parse(message.value.toString('utf8')) as VmsRiskSummary,
        timestampMs: Number(message.timestamp),
      });
    },
  });
  await Promise.race([isJoined, new Promise((resolve) => setTimeout(resolve, 30_000))]);
  return {
    async waitFor(tenantIds, timeoutMs, abort, besides) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = new Map<string, SummaryRecord>();
        for (const record of records)
          if (
            tenantIds.includes(record.value.tenantId) &&
            !found.has(record.value.tenantId) &&
            !besides?.has(record.value.cycleId)
          )
            found.set(record.value.tenantId, record);
        if (found.size === tenantIds.length) return found;
        const reason = abort?.();
        if (reason) throw new Error(reason);
        if (Date.now() > deadline) {
          const missing = tenantIds.filter((id) => !found.has(id));
          throw new Error(
            `no vms.risk-summary within ${Math.round(timeoutMs / 1000)} s for ${missing.length} tenant(s): ${missing.slice(0, 3).join(', ')}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    all: () => [...records],
    close: () => consumer.disconnect(),
  };
}

/** One message as the post-run reader hands it over. */
export interface TopicMessage {
  topic: string;
  partition: number;
  timestampMs: number;
  key: Buffer | null;
  value: Buffer | null;
}

export interface TopicTotals {
  messages: number;
  /** Key plus value bytes (the payload; the broker's record overhead and compression are not counted). */
  bytes: number;
}

/**
 * Reads every message of the topics once, from the beginning to the end offsets as they are now, and
 * returns the totals per topic. Used after a scenario, so reading does not compete with the pipeline.
 * Only the messages `counted` accepts (all by default) are counted and handed to `onMessage`.
 */
export async function readTopics(
  kafka: Kafka,
  topics: string[],
  groupId: string,
  onMessage: (message: TopicMessage) => void,
  counted: (message: TopicMessage) => boolean = () => true,
  timeoutMs = 600_000,
): Promise<Record<string, TopicTotals>> {
  const admin = kafka.admin();
  await admin.connect();
  const remaining = new Map<string, bigint>();
  const totals: Record<string, TopicTotals> = {};
  try {
    for (const topic of topics) {
      totals[topic] = { messages: 0, bytes: 0 };
      for (const partition of await admin.fetchTopicOffsets(topic)) {
        const low = BigInt(partition.low);
        const high = BigInt(partition.high);
        if (high > low) remaining.set(`${topic}/${partition.partition}`, high);
      }
    }
  } finally {
    await admin.disconnect();
  }
  if (remaining.size === 0) return totals;
  const consumer: Consumer = kafka.consumer({
    groupId,
    maxWaitTimeInMs: 200,
    maxBytes: 64 << 20,
    maxBytesPerPartition: 16 << 20,
  });
  await consumer.connect();
  try {
    for (const topic of topics) await consumer.subscribe({ topic, fromBeginning: true });
    let finish: () => void = () => undefined;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const key = `${batch.topic}/${batch.partition}`;
        const end = remaining.get(key);
        if (end === undefined) return;
        const total = totals[batch.topic] as TopicTotals;
        for (const message of batch.messages) {
          if (BigInt(message.offset) >= end) break;
          const read = {
            topic: batch.topic,
            partition: batch.partition,
            timestampMs: Number(message.timestamp),
            key: message.key,
            value: message.value,
          };
          if (!counted(read)) continue;
          total.messages++;
          total.bytes += (message.key?.length ?? 0) + (message.value?.length ?? 0);
          onMessage(read);
        }
        const last = batch.messages.at(-1);
        if (last && BigInt(last.offset) + 1n >= end) {
          remaining.delete(key);
          if (remaining.size === 0) finish();
        }
      },
    });
    await Promise.race([
      finished,
      new Promise((_, reject) =>
        setTimeout(
          () => reject(new Error(`reading ${topics.length} topics took over ${timeoutMs / 1000} s`)),
          timeoutMs,
        ).unref(),
      ),
    ]);
  } finally {
    await consumer.disconnect();
    await deleteGroups(kafka, [groupId]);
  }
  return totals;
}

export async function deleteGroups(kafka: Kafka, groupIds: string[]): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.deleteGroups(groupIds);
  } catch {
    // a group that never formed or is gone already
  } finally {
    await admin.disconnect();
  }
}

/** Deletes the topics that exist among these. */
export async function deleteTopics(kafka: Kafka, topics: string[]): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const present = topics.filter((topic) => existing.has(topic));
    if (present.length > 0) await admin.deleteTopics({ topics: present, timeout: 30_000 });
  } finally {
    await admin.disconnect();
  }
}

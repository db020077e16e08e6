import type { Consumer, Kafka } from 'kafkajs';
import { uniqueId, waitFor } from '@urs/testkit';

export interface Seen {
  topic: string;
  key: string | null;
  /** Parsed JSON, or null for a tombstone. */
  value: unknown;
  /** Raw text when the value was not JSON. */
  raw: string | null;
  offset: string;
  partition: number;
  receivedAt: number;
}

/** Reads topics from their beginning in the background and keeps every record, in arrival order. */
export class TopicWatch {
  readonly records: Seen[] = [];
  /** The offset after the last record read, by `topic/partition`. */
  private readonly nextOffset = new Map<string, bigint>();
  private consumer: Consumer | undefined;

  constructor(
    private readonly kafka: Kafka,
    private readonly topics: string[],
  ) {}

  async start(): Promise<void> {
    const consumer = this.kafka.consumer({ groupId: uniqueId('e2e-watch'), maxWaitTimeInMs: 100 });
    this.consumer = consumer;
    await consumer.connect();
    for (const topic of this.topics) await consumer.subscribe({ topic, fromBeginning: true });
    let joined: () => void = () => undefined;
    const ready = new Promise<void>((done) => (joined = done));
    consumer.on(consumer.events.GROUP_JOIN, () => joined());
    await consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        const text = message.value === null ? null : message.value.toString('utf8');
        let value: unknown = null;
        let raw: string | null = null;
        if (text !== null) {
          try {
            value = JSON.parse(text);
          } catch {
            raw = text;
          }
        }
        this.nextOffset.set(`${topic}/${partition}`, BigInt(message.offset) + 1n);
        this.records.push({
          topic,
          partition,
          key: message.key === null ? null : message.key.toString('utf8'),
          value,
          raw,
          offset: message.offset,
          receivedAt: Date.now(),
        });
      },
    });
    await ready;
  }

  /**
   * Resolves once the watch has read everything on `topic` up to its end as it is now. A record seen on one
   * topic says nothing of what has been read of another: the watch fetches each partition on its own (a
   * fetch gives at most 1 MB of a partition), so a cycle's summary can arrive before the last of its
   * device records, although they were produced first.
   */
  async caughtUp(topic: string, timeoutMs = 30_000): Promise<void> {
    const admin = this.kafka.admin();
    await admin.connect();
    let ends: { partition: number; high: string }[];
    try {
      ends = await admin.fetchTopicOffsets(topic);
    } finally {
      await admin.disconnect();
    }
    const behind = (): { partition: number; high: string }[] =>
      ends.filter(({ partition, high }) => {
        const next = this.nextOffset.get(`${topic}/${partition}`) ?? 0n;
        return next < BigInt(high);
      });
    await waitFor(() => behind().length === 0 || undefined, {
      timeoutMs,
      intervalMs: 50,
      description: `the watch of ${topic} read to its end`,
    });
  }

  of<T = unknown>(topic: string): (Seen & { value: T })[] {
    return this.records.filter((record) => record.topic === topic) as (Seen & { value: T })[];
  }

  /** The compacted view of a topic: the last value per key (tombstones as null). */
  latest<T = unknown>(topic: string): Map<string, T | null> {
    const view = new Map<string, T | null>();
    for (const record of this.of<T>(topic)) if (record.key !== null) view.set(record.key, record.value);
    return view;
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect();
  }
}

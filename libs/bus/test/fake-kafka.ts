import type { ConsumerRunConfig, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
import { tenantRecord } from '@urs/testkit';

/** What KafkaJS stops a consumer for when its broker is away. */
const outage = Object.assign(new Error('Connection error: connect ECONNREFUSED 127.0.0.1:9092'), {
  name: 'KafkaJSConnectionError',
  code: 'ECONNREFUSED',
  retriable: true,
});

/** One run of the fake consumer: KafkaJS's Runner, running once it joined its group. */
interface FakeRun {
  running: boolean;
}

/**
 * As much of a KafkaJS 2.2.4 consumer as the runner's restarts meet: run() joins the group when the test lets
 * it (the first at once unless holdFirstJoin), a crash stops the run and emits CRASH, and disconnect() stops the run only once it
 * joined: one that is still joining is dropped unstopped, and joins afterwards (KafkaJS's runner.stop returns
 * at once when not running yet). `members` are the runs that joined and were not stopped.
 */
export function fakeKafka(
  options: { holdFirstJoin?: boolean; failedConnects?: number; holdConnect?: boolean } = {},
) {
  const listeners = new Map<string, Array<(event: { payload: unknown }) => void>>();
  const emit = (name: string, payload: unknown): void => {
    for (const listener of listeners.get(name) ?? []) listener({ payload });
  };
  const members = new Set<FakeRun>();
  let current: FakeRun | null = null;
  let config: ConsumerRunConfig | undefined;
  let runs = 0;
  const joins: Array<() => void> = [];
  let failedConnects = options.failedConnects ?? 0;
  let connected = false;
  const connects: Array<() => void> = [];
  const consumer = {
    events: { GROUP_JOIN: 'join', CRASH: 'crash', REQUEST: 'request' },
    on: (name: string, listener: (event: { payload: unknown }) => void) => {
      listeners.set(name, [...(listeners.get(name) ?? []), listener]);
    },
    connect: async () => {
      // KafkaJS's connect giving up on a broker away.
      if (failedConnects-- > 0) throw outage;
      if (options.holdConnect) await new Promise<void>((resolve) => connects.push(resolve));
      connected = true;
    },
    subscribe: async () => undefined,
    pause: () => undefined,
    async run(runConfig: ConsumerRunConfig) {
      config = runConfig;
      const run: FakeRun = { running: false };
      current = run;
      if (runs++ > 0 || options.holdFirstJoin) await new Promise<void>((resolve) => joins.push(resolve));
      run.running = true;
      members.add(run);
      emit('join', { memberId: 'member', memberAssignment: { batches: [0] } });
    },
    async disconnect() {
      connected = false;
      if (current?.running) {
        current.running = false;
        members.delete(current);
      }
      current = null;
    },
  };
  return {
    kafka: { consumer: () => consumer } as unknown as Kafka,
    members,
    /** Whether the consumer is connected (connect() succeeded, disconnect() not called since). */
    connected: () => connected,
    /** Lets the oldest connect waiting (holdConnect) succeed. */
    connect: () => connects.shift()?.(),
    /** Connects waiting (holdConnect). */
    connecting: () => connects.length,
    /** Runs waiting to join (restarts, and the first with holdFirstJoin). */
    restarts: () => joins.length,
    /** The broker answering one of the consumer's requests (KafkaJS's REQUEST event). */
    answer: () => emit('request', { apiName: 'Heartbeat', duration: 1 }),
    /** Lets the oldest run waiting join its group. */
    join: () => joins.shift()?.(),
    /**
     * KafkaJS stopping the consumer: the run stops (disconnected) and CRASH is emitted. KafkaJS does so only
     * once every batch of the run has returned (its fetchers wait for their batches), so a test crashes the
     * fake with no batch under way.
     */
    crash: () => {
      if (current) {
        current.running = false;
        members.delete(current);
      }
      current = null;
      emit('crash', { error: outage, groupId: 'group', restart: false });
    },
    /** A batch of the run of now, handed to the runner's eachBatch; what it asks of KafkaJS is recorded. */
    batch(messages: KafkaMessage[]) {
      const run = current;
      const asked: string[] = [];
      const payload = {
        batch: {
          topic: 'batches',
          partition: 0,
          messages,
          lastOffset: () => messages[messages.length - 1]?.offset ?? '-1',
          highWatermark: String(Number(messages[messages.length - 1]?.offset ?? '-1') + 1),
        },
        isRunning: () => run?.running ?? false,
        isStale: () => false,
        resolveOffset: (offset: string) => void asked.push(`resolve ${offset}`),
        commitOffsetsIfNecessary: async () => void asked.push('commit'),
        heartbeat: async () => void asked.push('heartbeat'),
      } as unknown as EachBatchPayload;
      return { asked, done: config?.eachBatch?.(payload) ?? Promise.resolve() };
    },
  };
}

export function message(offset: string): KafkaMessage {
  return {
    key: Buffer.from('tenant'),
    value: Buffer.from(JSON.stringify(tenantRecord('tenant'))),
    offset,
    timestamp: '0',
    attributes: 0,
    headers: {},
  };
}

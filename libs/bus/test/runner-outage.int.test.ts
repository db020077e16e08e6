import { Kafka, logLevel } from 'kafkajs';
import {
  applyKafkaJsFixes,
  createConsumerRunner,
  createPublisher,
  type ConsumerRunner,
  type InboundMessage,
  type Ordering,
  type Publisher,
} from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import {
  capturingLogger,
  createUniqueTopics,
  startPrivateKafka,
  tenantRecord,
  uniqueId,
  waitFor,
  type LogLine,
  type PrivateKafka,
} from '@urs/testkit';

/**
 * How long the broker stays away, ms: longer than KafkaJS, with the small retries below, takes to stop the
 * consumer (its 5 fetch retries 0.1 s to 1 s apart, ~4 s), and longer than the runner's 10 s without an answer
 * before it reports not ready.
 */
const OUTAGE_MS = 15_000;

interface Watched {
  ordering: Ordering;
  groupId: string;
  runner: ConsumerRunner;
  handled: Set<string>;
  failed: Error | undefined;
  /** Times (ms since epoch) isReady() was seen false, then true again. */
  notReadyAt: number | undefined;
  readyAgainAt: number | undefined;
}

describe('createConsumerRunner through a broker outage', () => {
  let broker: PrivateKafka;
  let kafka: Kafka;
  let publisher: Publisher | undefined;
  const lines: LogLine[] = [];
  // Each line with its time, for URS_TEST_OUTAGE_LOG.
  const push = lines.push.bind(lines);
  lines.push = (...added) => push(...added.map((line) => ({ t: Date.now(), ...line })));
  const watched: Watched[] = [];
  let poll: NodeJS.Timeout | undefined;

  beforeAll(async () => {
    broker = await startPrivateKafka();
    // As createKafka's client, but with small retries: KafkaJS stops the consumer within seconds of the broker
    // going away (with the services' retries, after a minute), so the runner has to restart it.
    applyKafkaJsFixes();
    kafka = new Kafka({
      clientId: uniqueId('outage'),
      brokers: broker.brokers,
      logLevel: logLevel.NOTHING,
      connectionTimeout: 1_000,
      retry: { initialRetryTime: 100, maxRetryTime: 1_000, retries: 2 },
    });
  }, 120_000);

  afterAll(async () => {
    clearInterval(poll);
    if (process.env['URS_TEST_OUTAGE_LOG']) {
      process.stderr.write(
        lines
          .map((line) =>
            [
              line['t'],
              line.ordering,
              line.level,
              line.message,
              (line['error'] as Error | undefined)?.name,
              line['reason'] ?? (line['error'] as Error | undefined)?.message,
              line['downMs'],
            ].join(' '),
          )
          .join('\n') + '\n',
      );
    }
    await Promise.all(watched.map((w) => w.runner.close().catch(() => undefined)));
    await publisher?.close().catch(() => undefined);
    await broker?.close();
  }, 60_000);

  const mark = (what: string): void => void lines.push({ level: 'test', message: what, t: Date.now() });

  it('should survive the broker going away and come back ready, handling what came before and after', async () => {
    const [topic, dlq] = (await createUniqueTopics(kafka, [
      { prefix: 'outage', numPartitions: 2 },
      { prefix: 'outage-dlq' },
    ])) as [string, string];
    publisher = await createPublisher(kafka);
    for (const ordering of ['partition', 'key'] as const) {
      const handled = new Set<string>();
      const groupId = uniqueId(`outage-${ordering}`);
      const runner = createConsumerRunner({
        kafka,
        service: 'test',
        groupId,
        subscriptions: [
          {
            topic,
            contract: 'urs/tenant-record',
            handler: async (message: InboundMessage<TenantRecord>) =>
              void handled.add(message.value?.tenantId ?? ''),
          },
        ],
        publisher,
        dlqTopic: dlq,
        logger: capturingLogger(lines, { ordering }),
        metrics: new Registry({ processMetrics: false }),
        retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 20 }),
        ordering,
        commitIntervalMs: 100,
      });
      const w: Watched = {
        ordering,
        groupId,
        runner,
        handled,
        failed: undefined,
        notReadyAt: undefined,
        readyAgainAt: undefined,
      };
      void runner.failed().then((error) => (w.failed = error));
      watched.push(w);
      await runner.start();
    }
    const send = async (ids: string[]): Promise<void> => {
      await publisher?.send(
        topic,
        'urs/tenant-record',
        ids.map((id) => ({ key: id, value: tenantRecord(id) })),
      );
    };
    const before = Array.from({ length: 20 }, (_, i) => `before-${i}`);
    await send(before);
    await waitFor(() => watched.every((w) => w.runner.isReady() && w.handled.size === before.length), {
      timeoutMs: 30_000,
      description: 'both runners ready and every message before the outage handled',
    });
    // Each group's members: the runner's consumer, by the member id the broker gave it.
    const members = async (): Promise<string[][]> => {
      const admin = kafka.admin();
      await admin.connect();
      try {
        const { groups } = await admin.describeGroups(watched.map((w) => w.groupId));
        return watched.map((w) =>
          (groups.find((group) => group.groupId === w.groupId)?.members ?? []).map((m) => m.memberId),
        );
      } finally {
        await admin.disconnect();
      }
    };
    const membersBefore = await members();

    let outage = false;
    poll = setInterval(() => {
      for (const w of watched) {
        const ready = w.runner.isReady();
        if (outage && !ready) w.notReadyAt ??= Date.now();
        if (!outage && w.notReadyAt !== undefined && ready) w.readyAgainAt ??= Date.now();
      }
    }, 50);
    outage = true;
    mark('stopping the broker');
    await broker.stop();
    mark('broker stopped');
    const stopped = Date.now();
    await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS));
    outage = false;
    await broker.start();
    const back = Date.now();
    mark('broker back');
    const after = Array.from({ length: 20 }, (_, i) => `after-${i}`);
    await send(after);
    mark('sent after');
    await waitFor(() => watched.every((w) => w.readyAgainAt !== undefined || w.failed), {
      timeoutMs: 60_000,
      description: 'both runners ready again',
    });
    await waitFor(() => watched.every((w) => after.every((id) => w.handled.has(id)) || w.failed), {
      timeoutMs: 30_000,
      description: 'every message after the outage handled',
    });
    if (process.env['URS_TEST_OUTAGE_LOG'])
      process.stderr.write(
        `${JSON.stringify(
          watched.map((w) => ({
            ordering: w.ordering,
            failed: w.failed?.message,
            notReadyAfterMs: w.notReadyAt === undefined ? undefined : w.notReadyAt - stopped,
            readyAfterMs: w.readyAgainAt === undefined ? undefined : w.readyAgainAt - back,
          })),
        )}\n`,
      );

    for (const w of watched) {
      expect({ ordering: w.ordering, failed: w.failed?.message }).toEqual({
        ordering: w.ordering,
        failed: undefined,
      });
      expect(w.notReadyAt).toBeDefined();
      expect(w.readyAgainAt).toBeDefined();
      expect([...before, ...after].filter((id) => !w.handled.has(id))).toEqual([]);
    }
    // Each runner's consumer rejoined its group as the member it was before the outage (see
    // keepMemberIdAcrossRestarts), which is what shows that it did not wait out the old member's session (30 s),
    // without a clock: the coordinator holds a join only for a known member that has not joined yet, and each
    // group had one member, this one. A join as a new member (no id) is what was held: it gets a new id, which the
    // consumer keeps from then on, so it would be the group's member now. An old member whose session ran out is
    // removed, its id answered UNKNOWN_MEMBER_ID, and the consumer joins afresh with a new id again. The same one
    // member now: every join after the outage was that member's, of a group with no other member to wait for.
    expect(membersBefore.map((ids) => ids.length)).toEqual([1, 1]);
    expect(await members()).toEqual(membersBefore);
  }, 150_000);
});

import { join } from 'node:path';
import type { Consumer, Producer } from 'kafkajs';
import {
  checkMessage,
  vmsRecord,
  type ScoreBatch,
  type ScoredDevice,
  type VmsRiskSummary,
} from '@urs/contracts';
import { bandOf } from '@urs/scoring';
import {
  createPublishedStore,
  createRegistrarStateStore,
  createScoreStore,
  createTenantStore,
} from '@urs/store';
import {
  createTestKafka,
  createTestRedis,
  deleteTopics,
  runMain,
  scoredDevice,
  tenantRecord,
  testInfra,
  uniqueId,
  waitFor,
  type MainRun,
} from '@urs/testkit';

interface VmsMessage {
  topic: string;
  key: string;
  value: unknown;
}

/**
 * The publisher's main against the real Kafka and Redis: a tenant deleted (a tombstone on `urs.tenants`,
 * as the registrar writes it) has its devices tombstoned on `vms.risk-scores` and its publisher state
 * forgotten; a batch of a cycle that started before the deletion is not published; the tenant registered
 * again publishes its new cycles. Its Redis wiped while it runs, it reads back from `vms.risk-scores` the
 * devices VMS holds.
 */
describe('publisher main: a deleted tenant', () => {
  const redis = createTestRedis(uniqueId('tenant-deletion'));
  const topicPrefix = `${uniqueId('ptd')}.`;
  const topic = (name: string): string => `${topicPrefix}${name}`;
  const kafka = createTestKafka();
  const tenantId = 'tenant-deleted';
  const received: VmsMessage[] = [];
  let run: MainRun | undefined;
  let producer: Producer | undefined;
  let reader: Consumer | undefined;

  afterAll(async () => {
    await run?.exitWithin(0);
    await reader?.disconnect();
    await producer?.disconnect();
    await redis.close();
    const admin = kafka.admin();
    await admin.connect();
    const topics = (await admin.listTopics()).filter((name) => name.startsWith(topicPrefix));
    await admin.disconnect();
    await deleteTopics(kafka, topics);
  });

  const device = (deviceId: string, score: number): ScoredDevice =>
    scoredDevice(deviceId, score, bandOf(score));

  function scoreBatch(
    cycleId: string,
    startedAt: number,
    batchIndex: number,
    devices: ScoredDevice[],
    totalBatches: number,
    ofTenant = tenantId,
  ): ScoreBatch {
    const lastBatch = batchIndex === totalBatches - 1;
    return {
      schemaVersion: 1,
      tenantId: ofTenant,
      cycleId,
      cycleStartedAt: new Date(startedAt).toISOString(),
      batchIndex,
      lastBatch,
      ...(lastBatch ? { totalBatches, totalDevices: devices.length } : {}),
      collectedAt: new Date(startedAt + 1_000).toISOString(),
      scoredAt: new Date(startedAt + 2_000).toISOString(),
      devices,
    };
  }

  /** As the scorer does before it sends the batch on. */
  async function storeScores(batch: ScoreBatch): Promise<void> {
    const { cycleId, cycleStartedAt, collectedAt, scoredAt } = batch;
    await createScoreStore(redis.client, redis.prefix).saveScores(
      batch.tenantId,
      { cycleId, cycleStartedAt, collectedAt, scoredAt },
      batch.devices,
    );
  }

  /** As the scorer does: stores the batch's scores, then sends it on. */
  async function sendBatch(batch: ScoreBatch): Promise<void> {
    expect(checkMessage('urs/score-batch', batch)).toEqual([]);
    await storeScores(batch);
    await producer?.send({
      topic: topic('urs.device-scores'),
      messages: [{ key: batch.tenantId, value: JSON.stringify(batch) }],
    });
  }

  const scores = (): VmsMessage[] => received.filter((m) => m.topic === topic('vms.risk-scores'));
  const summaries = (): VmsRiskSummary[] =>
    received.filter((m) => m.topic === topic('vms.risk-summary')).map((m) => m.value as VmsRiskSummary);
  const logged = (message: string): Record<string, unknown>[] =>
    run?.lines.filter((line) => line['message'] === message) ?? [];

  beforeAll(async () => {
    // The tenant records whole, as the registrar leaves them at its start: a deletion with no record of the
    // tenant in Redis is then acted on, not held for the rebuild.
    await createRegistrarStateStore(redis.client, redis.prefix).markRebuilt(new Date());
    run = runMain(join(__dirname, '..', 'src', 'main.ts'), {
      KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
      REDIS_URL: testInfra().redisUrl,
      URS_TOPIC_PREFIX: topicPrefix,
      URS_TOPIC_PARTITIONS: '1',
      URS_REDIS_PREFIX: redis.prefix,
      URS_METRICS_PORT: '0',
      URS_LOG_LEVEL: 'info',
      URS_REBUILD_CHECK_MS: '500',
    });
    await waitFor(() => logged('started').length > 0, { timeoutMs: 60_000 });

    producer = kafka.producer();
    await producer.connect();
    reader = kafka.consumer({ groupId: uniqueId('vms-reader'), maxWaitTimeInMs: 200 });
    await reader.connect();
    await reader.subscribe({
      topics: [topic('vms.risk-scores'), topic('vms.risk-summary')],
      fromBeginning: true,
    });
    await reader.run({
      eachMessage: async ({ topic: from, message }) => {
        received.push({
          topic: from,
          key: message.key?.toString('utf8') ?? '',
          value: message.value === null ? null : (JSON.parse(message.value.toString('utf8')) as unknown),
        });
      },
    });
  }, 90_000);

  it('should tombstone its devices, forget its state, drop its late batches, and publish it again once registered again', async () => {
    // Cycle c1 complete (its summary out), then c2 open: one batch of two published before the deletion.
    const tenants = createTenantStore(redis.client, redis.prefix);
    await tenants.put(tenantRecord(tenantId, { revision: 1 }));
    const startedAt = Date.now() - 120_000;
    await sendBatch(scoreBatch('c1', startedAt, 0, [device('a', 10), device('b', 80), device('c', 20)], 1));
    await sendBatch(scoreBatch('c2', startedAt + 60_000, 0, [device('a', 90), device('d', 30)], 2));
    await waitFor(() => scores().length === 5 && summaries().length === 1, { timeoutMs: 30_000 });
    // A device of c2 scored before the deletion, its batch not sent yet: stored, never published. Nothing
    // tells the publisher that its record did not go out: it is tombstoned too (harmless for a key VMS lacks).
    await storeScores(scoreBatch('c2', startedAt + 60_000, 1, [device('g', 60)], 2));

    // Deleted as the registrar deletes: a null value under the tenant's key, with the deletion's revision,
    // then the record removed.
    await producer?.send({
      topic: topic('urs.tenants'),
      messages: [{ key: tenantId, value: null, headers: { 'urs-revision': '2' } }],
    });
    await tenants.remove(tenantId, 2);
    await waitFor(() => scores().filter((m) => m.value === null).length >= 5, { timeoutMs: 30_000 });
    const tombstones = scores().slice(5);
    expect(tombstones.map((m) => m.key).sort()).toEqual(
      ['a', 'b', 'c', 'd', 'g'].map((deviceId) => `${tenantId}/${deviceId}`),
    );
    expect(tombstones.every((m) => m.value === null)).toBe(true);
    await waitFor(() => logged('tenant deleted, its devices tombstoned').length === 1, {
      timeoutMs: 10_000,
    });
    expect(logged('tenant deleted, its devices tombstoned')[0]).toMatchObject({ tenantId, tombstones: 5 });

    // Its publisher state is gone: what was published and seen, its completed cycles, its devices' scores
    // (the one never published too) with their histories.
    const stateKeys = [
      'published',
      'published-seen',
      'published-cycles',
      'published-seq',
      'published-counter',
      'scores',
      'score-stamps',
      'score-bands',
      'score-cycles',
    ].map((name) => `${redis.prefix}${name}:${tenantId}`);
    expect(await redis.client.exists(...stateKeys)).toBe(0);
    expect(await redis.client.keys(`${redis.prefix}score*:${tenantId}*`)).toEqual([]);

    // c2's last batch, scored before the deletion, arrives after it: neither its records nor c2's summary
    // (it was the cycle's last batch).
    await sendBatch(scoreBatch('c2', startedAt + 60_000, 1, [device('e', 50)], 2));
    await waitFor(() => logged('batch of a deleted tenant not published').length === 1, {
      timeoutMs: 30_000,
    });

    // Registered again: a cycle that started after the registration publishes every device and its summary.
    await tenants.put(tenantRecord(tenantId, { revision: 3 }));
    await producer?.send({
      topic: topic('urs.tenants'),
      messages: [{ key: tenantId, value: JSON.stringify(tenantRecord(tenantId, { revision: 3 })) }],
    });
    // The poller starts the tenant's next cycle once it has read the registration; so does the test.
    const published = createPublishedStore(redis.client, redis.prefix);
    await waitFor(async () => !(await published.ofDeletedTenant(tenantId, Date.now())), {
      timeoutMs: 30_000,
    });
    await sendBatch(scoreBatch('c3', Date.now(), 0, [device('a', 90), device('f', 40)], 1));
    await waitFor(() => summaries().some((summary) => summary.cycleId === 'c3'), { timeoutMs: 30_000 });
    const after = scores().slice(10);
    expect(after.map((m) => m.key).sort()).toEqual([`${tenantId}/a`, `${tenantId}/f`]);
    expect(after.every((m) => (m.value as { cycleId: string }).cycleId === 'c3')).toBe(true);
    expect(summaries().map((summary) => summary.cycleId)).toEqual(['c1', 'c3']);
    expect(logged('batch of a deleted tenant not published')).toHaveLength(1);
  }, 120_000);

  it('should publish the cycles of a tenant registered again before it reads the registration', async () => {
    const again = 'tenant-registered-again';
    const tenants = createTenantStore(redis.client, redis.prefix);
    const ofAgain = (messages: VmsMessage[]): VmsMessage[] =>
      messages.filter((m) => m.key.startsWith(`${again}/`));
    const dropped = (): Record<string, unknown>[] =>
      logged('batch of a deleted tenant not published').filter((line) => line['tenantId'] === again);
    await tenants.put(tenantRecord(again, { revision: 1 }));
    await sendBatch(scoreBatch('c1', Date.now() - 60_000, 0, [device('a', 10), device('b', 80)], 1, again));
    await waitFor(() => ofAgain(scores()).length === 2, { timeoutMs: 30_000 });

    // Deleted (revision 2) as the registrar deletes: the tombstone, then the record removed.
    await producer?.send({
      topic: topic('urs.tenants'),
      messages: [{ key: again, value: null, headers: { 'urs-revision': '2' } }],
    });
    await tenants.remove(again, 2);
    await waitFor(
      () => logged('tenant deleted, its devices tombstoned').some((line) => line['tenantId'] === again),
      { timeoutMs: 30_000 },
    );

    // Registered again (revision 3): the registrar writes the record, and the poller starts the tenant's
    // cycle as soon as it reads it, while the publisher has not read the registration (behind on
    // urs.tenants, or restarting). The cycle is the registration's: published, with its summary.
    await tenants.put(tenantRecord(again, { revision: 3 }));
    await sendBatch(scoreBatch('c2', Date.now(), 0, [device('a', 90), device('c', 40)], 1, again));
    const ofC2 = (): VmsMessage[] =>
      ofAgain(scores()).filter((m) => (m.value as { cycleId?: string } | null)?.cycleId === 'c2');
    const summarised = (): boolean =>
      summaries().some((summary) => summary.tenantId === again && summary.cycleId === 'c2');
    await waitFor(() => dropped().length > 0 || (summarised() && ofC2().length === 2), {
      timeoutMs: 30_000,
    });
    expect(dropped()).toEqual([]);
    expect(
      ofC2()
        .map((m) => m.key)
        .sort(),
    ).toEqual([`${again}/a`, `${again}/c`]);
  }, 120_000);

  it('should tombstone a device whose record went out before its batch was recorded, the batch dropped after the deletion', async () => {
    const crashed = 'tenant-crashed';
    const tenants = createTenantStore(redis.client, redis.prefix);
    const ofCrashed = (): VmsMessage[] => scores().filter((m) => m.key.startsWith(`${crashed}/`));
    const last = (deviceId: string): VmsMessage | undefined =>
      ofCrashed()
        .filter((m) => m.key === `${crashed}/${deviceId}`)
        .at(-1);
    const logs = (message: string): Record<string, unknown>[] =>
      logged(message).filter((line) => line['tenantId'] === crashed);
    await tenants.put(tenantRecord(crashed, { revision: 1 }));
    const startedAt = Date.now() - 60_000;
    await sendBatch(scoreBatch('c1', startedAt, 0, [device('a', 10)], 2, crashed));
    await waitFor(() => ofCrashed().length === 1, { timeoutMs: 30_000 });

    // The cycle's second batch brings device d, never published before: scored and stored, its record
    // produced, and the publisher stopped before recording the batch (a crash, or a send that failed part way
    // through a broker outage), so the batch comes again.
    const second = scoreBatch('c1', startedAt, 1, [device('d', 80)], 2, crashed);
    await storeScores(second);
    const [record] = second.devices.map((scored) => vmsRecord(crashed, 'c1', second.scoredAt, scored));
    await producer?.send({
      topic: topic('vms.risk-scores'),
      messages: [{ key: record?.key ?? '', value: JSON.stringify(record?.value) }],
    });
    await waitFor(() => last('d') !== undefined, { timeoutMs: 30_000 });

    // Deleted before the batch comes again, as the registrar deletes: the tombstone, then the record removed.
    await producer?.send({
      topic: topic('urs.tenants'),
      messages: [{ key: crashed, value: null, headers: { 'urs-revision': '2' } }],
    });
    await tenants.remove(crashed, 2);
    await waitFor(() => logs('tenant deleted, its devices tombstoned').length === 1, { timeoutMs: 30_000 });
    await producer?.send({
      topic: topic('urs.device-scores'),
      messages: [{ key: crashed, value: JSON.stringify(second) }],
    });
    await waitFor(() => logs('batch of a deleted tenant not published').length === 1, { timeoutMs: 30_000 });

    // Both devices leave VMS: the one recorded as published and the one only the score store knew of.
    await waitFor(() => last('a')?.value === null && last('d')?.value === null, { timeoutMs: 10_000 }).catch(
      () => undefined,
    );
    expect({ a: last('a')?.value, d: last('d')?.value }).toEqual({ a: null, d: null });
    expect(logs('tenant deleted, its devices tombstoned')[0]).toMatchObject({ tombstones: 2 });
    expect(await redis.client.exists(`${redis.prefix}scores:${crashed}`)).toBe(0);
  }, 120_000);

  it('should read back the devices VMS holds from vms.risk-scores when its Redis is wiped while it runs', async () => {
    const wiped = 'tenant-wiped';
    await createTenantStore(redis.client, redis.prefix).put(tenantRecord(wiped, { revision: 1 }));
    await sendBatch(scoreBatch('c1', Date.now() - 60_000, 0, [device('a', 10), device('b', 80)], 1, wiped));
    await waitFor(() => summaries().some((summary) => summary.tenantId === wiped), { timeoutMs: 30_000 });
    const rebuilds = (): Record<string, unknown>[] =>
      logged('published devices rebuilt from vms.risk-scores');
    const before = rebuilds().length;

    await redis.cleanup();
    await waitFor(() => rebuilds().length > before, { timeoutMs: 30_000 });
    expect(await redis.client.zrange(`${redis.prefix}published-seen:${wiped}`, 0, -1, 'WITHSCORES')).toEqual([
      'a',
      '0',
      'b',
      '0',
    ]);
  }, 60_000);
});

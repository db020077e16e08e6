import type { Kafka } from 'kafkajs';
import { createPublisher, type Publisher } from '@urs/bus';
import { vmsRecord, type ScoreBatch, type TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createCycleStore, createPublishedStore, createScoreStore, createTenantStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import {
  createTestKafka,
  createUniqueTopics,
  deleteTopics,
  inboundMessage,
  scoredDevice,
  testRedisPerTest,
  uniqueId,
  waitFor,
} from '@urs/testkit';
import { createCycleCompletion } from '../src/completion';
import { createPublishHandler } from '../src/handler';
import { batchStats } from '../src/records';
import { createInOrder } from '../src/in-order';
import { tenantLeasing } from '../src/lease';
import { createPublishedRebuilder, vmsKeysReader, type VmsKeysReader } from '../src/rebuild';
import { createTenantsHandler } from '../src/tenants';
import { createTombstones } from '../src/tombstones';

// Recent times: the cycle store expires a cycle a day after its deadline.
const base = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 3_600_000;
const minute = (n: number): string => new Date(base + n * 60_000).toISOString();

/** `reader` counting its reads in `reads`, each read waiting for `reads.held` first, if set. */
function counted(reader: VmsKeysReader, reads: { count: number; held?: Promise<void> }): VmsKeysReader {
  return async (onKeys, signal) => {
    reads.count++;
    await reads.held;
    return reader(onKeys, signal);
  };
}

/**
 * Publisher replicas on one Redis and a real `vms.risk-scores` (a compacted topic of 3 partitions, its own per
 * test): what VMS holds is rebuilt from the topic after the test's Redis keys are wiped.
 */
describe('the publisher after its Redis was wiped', () => {
  const kafka = createTestKafka();
  const redis = testRedisPerTest();
  const created: string[] = [];
  let publisher: Publisher;
  let topics: { vmsRiskScores: string; vmsRiskSummary: string };
  let sent: { topic: string; key: string; deleted: boolean }[];

  beforeAll(async () => {
    publisher = await createPublisher(kafka);
  });
  afterAll(async () => {
    await publisher.close();
    await deleteTopics(kafka, created);
  });
  beforeEach(async () => {
    const [vmsRiskScores, vmsRiskSummary] = (await createUniqueTopics(kafka, [
      {
        prefix: 'vms-risk-scores',
        numPartitions: 3,
        configEntries: [{ name: 'cleanup.policy', value: 'compact' }],
      },
      { prefix: 'vms-risk-summary' },
    ])) as [string, string];
    created.push(vmsRiskScores, vmsRiskSummary);
    topics = { vmsRiskScores, vmsRiskSummary };
    sent = [];
  });

  const tombstoned = (): string[] =>
    sent
      .filter((m) => m.topic === topics.vmsRiskScores && m.deleted)
      .map((m) => m.key)
      .sort();
  const summaries = (): string[] => sent.filter((m) => m.topic === topics.vmsRiskSummary).map((m) => m.key);
  const seen = (tenantId: string): Promise<string[]> =>
    redis.client.zrange(`${redis.prefix}published-seen:${tenantId}`, 0, -1, 'WITHSCORES');

  /** The topic's reader as the publisher's main makes it. */
  const reader = (client: Kafka = kafka): VmsKeysReader =>
    vmsKeysReader(client, topics.vmsRiskScores, uniqueId('publisher'), silentLogger, 60_000);

  /** One replica: its own queue, lease holder and rebuild, on the shared Redis and Kafka. */
  function replica(readKeys: VmsKeysReader = reader(), tombstoneAfterCycles = 3, summaryLockMs?: number) {
    const sending: Publisher = {
      ...publisher,
      send: async (topic, contract, messages) => {
        await publisher.send(topic, contract, messages);
        for (const m of messages) sent.push({ topic, key: m.key, deleted: m.value === null });
      },
    };
    const metrics = new Registry({ processMetrics: false });
    const cycles = createCycleStore(redis.client, redis.prefix);
    const published = createPublishedStore(redis.client, redis.prefix);
    const scores = createScoreStore(redis.client, redis.prefix);
    const inOrder = createInOrder();
    const leasing = tenantLeasing();
    const rebuild = createPublishedRebuilder({ published, readKeys, logger: silentLogger, waitMs: 20 });
    const completion = createCycleCompletion({
      cycles,
      published,
      scores,
      publisher: sending,
      topics,
      logger: silentLogger,
      metrics,
      snapshotEveryCycles: 24,
      tombstoneAfterCycles,
      inOrder,
      leasing,
      rebuild,
      ...(summaryLockMs === undefined ? {} : { summaryLockMs }),
    });
    const handler = createPublishHandler({
      cycles,
      published,
      completion,
      inOrder,
      leasing,
      publisher: sending,
      topic: topics.vmsRiskScores,
      logger: silentLogger,
      metrics,
    });
    const tenants = createTenantsHandler({
      published,
      tenants: createTenantStore(redis.client, redis.prefix),
      tombstones: createTombstones({
        published,
        scores,
        publisher: sending,
        topic: topics.vmsRiskScores,
        metrics,
      }),
      scores,
      inOrder,
      leasing,
      rebuild,
      logger: silentLogger,
    });
    /** A cycle of one batch listing `deviceIds`, scored and handled as the scorer and the runner do. */
    const runCycle = async (cycle: number, deviceIds: string[], tenantId = 't1') => {
      const cycleId = `c${cycle}`;
      const cycleStartedAt = minute(cycle * 10);
      await cycles.begin({
        tenantId,
        cycleId,
        startedAt: cycleStartedAt,
        deadlineAt: minute(cycle * 10 + 5),
      });
      const batch: ScoreBatch = {
        schemaVersion: 1,
        tenantId,
        cycleId,
        cycleStartedAt,
        batchIndex: 0,
        lastBatch: true,
        totalBatches: 1,
        totalDevices: deviceIds.length,
        collectedAt: minute(cycle * 10 + 1),
        scoredAt: minute(cycle * 10 + 2),
        devices: deviceIds.map((id) => scoredDevice(id, 20, 'Trustworthy')),
      };
      const { collectedAt, scoredAt } = batch;
      await scores.saveScores(tenantId, { cycleId, cycleStartedAt, collectedAt, scoredAt }, batch.devices);
      await handler(inboundMessage(batch, { topic: 'urs.device-scores', key: tenantId }));
    };
    /** The tenant's deletion as the registrar writes it on urs.tenants. */
    const deleteTenant = (tenantId: string) =>
      tenants(
        inboundMessage<TenantRecord>(null, { topic: 'urs.tenants', key: tenantId, timestamp: Date.now() }),
      );
    return { runCycle, deleteTenant, rebuild, published, completion, cycles, metrics };
  }

  it('should tombstone the devices VMS holds that the cycles after the wipe no longer list, and only them', async () => {
    const one = replica();
    await one.runCycle(1, ['a', 'b', 'c', 'd', 'e']);
    await redis.cleanup();

    // The devices still listed are published again; the others count as seen in no cycle.
    await one.runCycle(2, ['a', 'b']);
    await one.runCycle(3, ['a', 'b']);
    expect(tombstoned()).toEqual([]);
    await one.runCycle(4, ['a', 'b']);
    expect(tombstoned()).toEqual(['t1/c', 't1/d', 't1/e']);
    expect(summaries()).toHaveLength(4);
    // Forgotten once tombstoned: never tombstoned again.
    await one.runCycle(5, ['a', 'b']);
    expect(tombstoned()).toEqual(['t1/c', 't1/d', 't1/e']);
  });

  it("should not restore a device whose last record on the topic is a tombstone, nor a deleted tenant's devices", async () => {
    const one = replica();
    await one.runCycle(1, ['a', 'b', 'c', 'f']);
    await one.runCycle(1, ['x'], 't2');
    // c was tombstoned before the wipe; f was tombstoned and then published again.
    await publisher.send(topics.vmsRiskScores, 'urs/vms-risk-score', [
      { key: 't1/c', value: null },
      { key: 't1/f', value: null },
    ]);
    await publisher.send(topics.vmsRiskScores, 'urs/vms-risk-score', [
      vmsRecord('t1', 'c2', minute(22), scoredDevice('f', 30, 'Low Risk')),
    ]);
    // t2 deleted and not registered again; Redis then lost all but its deletion's marker (a deletion is refused
    // on a record not whole, so only a partial loss leaves a marker the rebuild meets).
    await one.published.markDeleted('t2', Date.now());
    const deletionKey = `${redis.prefix}published-deleted:t2`;
    const deletion = await redis.client.hgetall(deletionKey);
    await redis.cleanup();
    await redis.client.hset(deletionKey, deletion);

    await one.rebuild.ensure();
    expect(await seen('t1')).toEqual(['a', '0', 'b', '0', 'f', '0']);
    expect(await seen('t2')).toEqual([]);
    expect(await one.published.isRebuilt()).toBe(true);
  });

  it('should keep a device a completed cycle tombstoned before the wipe out of VMS when a batch of an older cycle comes late', async () => {
    const one = replica();
    await one.runCycle(1, ['a', 'b', 'c']);
    for (const cycle of [2, 3, 4]) await one.runCycle(cycle, ['a', 'b']);
    expect(tombstoned()).toEqual(['t1/c']);
    await redis.cleanup();

    await one.rebuild.ensure();
    const before = sent.length;
    // The first cycle's batch, delivered again (or late) after the wipe, still lists c.
    await one.runCycle(1, ['a', 'b', 'c']);
    const republished = sent.slice(before).filter((m) => m.topic === topics.vmsRiskScores && !m.deleted);
    expect(republished.map((m) => m.key).sort()).toEqual(['t1/a', 't1/b']);
    expect(await seen('t1')).not.toContain('c');
    // A cycle that started after its tombstone (written now, the test's cycles started earlier) lists it again.
    await one.runCycle(13, ['a', 'b', 'c']);
    expect(sent.slice(before).some((m) => m.key === 't1/c' && !m.deleted)).toBe(true);
  });

  it('should rebuild once for replicas that find the marker missing at the same time', async () => {
    const reads = { count: 0 };
    const one = replica(counted(reader(), reads));
    const two = replica(counted(reader(), reads));
    await one.runCycle(1, ['a', 'b', 'c']);
    await redis.cleanup();
    reads.count = 0;

    await Promise.all([one.rebuild.ensure(), two.rebuild.ensure(), one.rebuild.ensure()]);
    expect(reads.count).toBe(1);
    expect(await seen('t1')).toEqual(['a', '0', 'b', '0', 'c', '0']);
  });

  it("should make a tenant's deletion wait for another replica's rebuild, so it tombstones every device VMS holds", async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const reads: { count: number; held?: Promise<void> } = { count: 0 };
    const one = replica(counted(reader(), reads));
    const two = replica();
    await one.runCycle(1, ['a', 'b', 'c']);
    await redis.cleanup();
    reads.count = 0;
    reads.held = released;

    const rebuilding = one.rebuild.ensure();
    await waitFor(() => reads.count === 1);
    // The tenant's deletion goes to the other replica while the rebuild reads.
    const deleting = two.deleteTenant('t1');
    release();
    await Promise.all([rebuilding, deleting]);
    expect(tombstoned()).toEqual(['t1/a', 't1/b', 't1/c']);
  });

  it("should refuse a tenant's deletion on a record Redis lost after the rebuild check, so it tombstones every device VMS holds once rebuilt", async () => {
    const one = replica();
    await one.runCycle(1, ['a', 'b', 'c']);
    // The wipe comes between the deletion's check of the rebuild and its marking: nothing is written.
    await redis.cleanup();
    await expect(one.published.markDeleted('t1', Date.now())).rejects.toMatchObject({
      code: 'REBUILD_NEEDED',
      infrastructure: true,
    });
    expect(await redis.client.exists(`${redis.prefix}published-deleted:t1`)).toBe(0);

    // Held and tried again, the deletion rebuilds first.
    await one.deleteTenant('t1');
    expect(tombstoned()).toEqual(['t1/a', 't1/b', 't1/c']);
  });

  it('the deadline sweep should send the partial summaries while the rebuild reads, and the complete one it owes once the rebuild is done', async () => {
    const reads: { count: number; held?: Promise<void> } = { count: 0 };
    let release!: () => void;
    reads.held = new Promise<void>((resolve) => (release = resolve));
    // A summary claimed and not sent is owed again after its lock: soon here.
    const one = replica(counted(reader(), reads), 3, 300);
    // t1's cycle 1: its one batch recorded, then the publisher stopped before claiming it (complete, overdue).
    await one.cycles.begin({ tenantId: 't1', cycleId: 'c1', startedAt: minute(10), deadlineAt: minute(15) });
    await one.cycles.listed('t1', 'c1', { totalBatches: 1, totalDevices: 1, listedAt: minute(11) });
    const batch: ScoreBatch = {
      schemaVersion: 1,
      tenantId: 't1',
      cycleId: 'c1',
      cycleStartedAt: minute(10),
      batchIndex: 0,
      lastBatch: true,
      collectedAt: minute(11),
      scoredAt: minute(12),
      devices: [scoredDevice('a', 20, 'Trustworthy')],
    };
    await one.cycles.recordBatch('t1', 'c1', 0, batchStats(batch, 1));
    // t2's cycle 1: one batch of two, past its deadline (partial).
    await one.cycles.begin({ tenantId: 't2', cycleId: 'c1', startedAt: minute(10), deadlineAt: minute(15) });
    await one.cycles.listed('t2', 'c1', { totalBatches: 2, totalDevices: 2, listedAt: minute(11) });
    await one.cycles.recordBatch('t2', 'c1', 0, batchStats({ ...batch, tenantId: 't2' }, 1));

    expect(await one.completion.closeOverdue()).toBe(1);
    expect(summaries()).toEqual(['t2']);
    // Waiting for the rebuild is not a failure to send (its alert says to check Kafka).
    expect(one.metrics.expose()).not.toMatch(/^urs_summary_sweep_failures_total [1-9]/m);
    release();
    await one.rebuild.ensure();
    await waitFor(async () => (await one.completion.closeOverdue()) === 1);
    expect(summaries()).toEqual(['t2', 't1']);
  });

  it('a rebuild whose token no longer holds the lock should neither restore nor set the marker', async () => {
    const { published } = replica();
    expect(await published.takeRebuild('first', 60_000)).toBe(true);
    await redis.cleanup();
    expect(await published.takeRebuild('second', 60_000)).toBe(true);
    await expect(published.restore('first', 't1', [{ deviceId: 'a', live: true }])).rejects.toMatchObject({
      code: 'REBUILD_LOST',
    });
    expect(await published.markRebuilt('first', new Date())).toBe(false);
    expect(await seen('t1')).toEqual([]);
    expect(await published.isRebuilt()).toBe(false);
    expect(await published.restore('second', 't1', [{ deviceId: 'a', live: true }])).toBe(1);
    expect(await published.markRebuilt('second', new Date())).toBe(true);
  });

  it('should set the marker without reading a topic that holds no record (a new install)', async () => {
    let consumers = 0;
    const counting = Object.assign(Object.create(kafka) as Kafka, {
      consumer: (...args: Parameters<Kafka['consumer']>) => {
        consumers++;
        return kafka.consumer(...args);
      },
    });
    const one = replica(reader(counting));
    await one.rebuild.ensure();
    expect(await one.published.isRebuilt()).toBe(true);
    expect(consumers).toBe(0);
    expect(await seen('t1')).toEqual([]);
  });
});

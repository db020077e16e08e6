import { deviceBatchMessage, parseJsonBytes, type InboundMessage, type Publisher } from '@urs/bus';
import {
  TENANT_REVISION_HEADER,
  validateMessage,
  type ScoreBatch,
  type ScoredDevice,
  type SignalName,
  type TenantRecord,
  type VmsRiskScore,
  type VmsRiskSummary,
} from '@urs/contracts';
import { silentLogger, type Logger } from '@urs/logging';
import {
  createCycleStore,
  createPublishedStore,
  createRegistrarStateStore,
  createScoreStore,
  createTenantStore,
  type TombstoneHold,
} from '@urs/store';
import { isInfrastructureFault } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import {
  capturingLogger,
  createTestRedis,
  deleteKeysMatching,
  inboundMessage,
  type LogLine,
  scoredDevice,
  tenantRecord,
  type TestRedis,
  waitFor,
} from '@urs/testkit';
import { createCycleCompletion } from '../src/completion';
import { createPublishHandler } from '../src/handler';
import { createInOrder } from '../src/in-order';
import { tenantLeasing } from '../src/lease';
import { createPublishedRebuilder } from '../src/rebuild';
import { batchStats } from '../src/records';
import { createTenantsHandler } from '../src/tenants';
import { createTombstones } from '../src/tombstones';

const topics = { vmsRiskScores: 'vms.risk-scores', vmsRiskSummary: 'vms.risk-summary' };

const device = (
  deviceId: string,
  score: number,
  band: ScoredDevice['band'],
  missing: SignalName[] = [],
): ScoredDevice => scoredDevice(deviceId, score, band, { missing });

// Recent times: the cycle store expires a cycle a day after its deadline.
const base = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 3_600_000;
const minute = (n: number): string => new Date(base + n * 60_000).toISOString();

function scoreBatch(
  cycle: number,
  batchIndex: number,
  devices: ScoredDevice[],
  totalBatches?: number,
): ScoreBatch {
  return {
    schemaVersion: 1,
    tenantId: 't1',
    cycleId: `c${cycle}`,
    cycleStartedAt: minute(cycle * 10),
    batchIndex,
    lastBatch: totalBatches !== undefined,
    ...(totalBatches !== undefined ? { totalBatches, totalDevices: 3 } : {}),
    collectedAt: minute(cycle * 10 + 1),
    scoredAt: minute(cycle * 10 + 2),
    devices,
  };
}

const message = (value: ScoreBatch): InboundMessage<ScoreBatch> =>
  inboundMessage(value, { topic: 'urs.device-scores', key: value.tenantId });

/**
 * A point a batch stops at once, when armed: `reached` resolves when it gets there, `release` lets it go on.
 * Holds a tenant's batch (and its queue) at a chosen moment.
 */
function holdOnce(): {
  point: () => Promise<void>;
  arm: () => void;
  reached: Promise<void>;
  release: () => void;
} {
  let armed = false;
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => (reach = resolve));
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  return {
    point: async () => {
      if (!armed) return;
      armed = false;
      reach();
      await held;
    },
    arm: () => (armed = true),
    reached,
    release,
  };
}

describe('the publisher', () => {
  let redis: TestRedis;
  let sent: { topic: string; key: string; value: unknown; json?: string | Buffer }[];
  let now: Date;

  beforeEach(() => {
    redis = createTestRedis();
    sent = [];
    now = new Date(minute(3));
  });
  afterEach(async () => {
    await redis.close();
  });
  /** The registrar's tenant records in this test's Redis. */
  const tenantStore = () => createTenantStore(redis.client, redis.prefix);

  function build(
    options: {
      snapshotEveryCycles?: number;
      tombstoneAfterCycles?: number;
      tombstoneHold?: TombstoneHold;
      failSummaries?: number;
      /** A cycle whose first summary send fails (besides `failSummaries`). */
      failFirstSummaryOf?: string;
      /** Called as a summary send fails, before it throws (a send that took long moves the clock on). */
      onSummaryFailure?: () => void;
      summaryLockMs?: number;
      /** How long the sweep waits for a tenant's turn in its queue; the default's 1 s when not given. */
      sweepQueueWaitMs?: number;
      summaryDelayMs?: number;
      /** Called as a summary is sent, before it is recorded sent (a send held at a chosen moment). */
      beforeSummarySent?: () => Promise<void>;
      /** Summary locks that fail as a Redis error would, after the claim. */
      failLocks?: number;
      /** Sent summaries whose record writes the sent marker and then fails as a Redis error would. */
      failAfterSentMarker?: number;
      /** Batches whose recording fails as a process killed before it would, after their records were sent. */
      failRecords?: number;
      /** Called once each send to vms.risk-scores is done, before the caller goes on. */
      afterScoresSent?: () => Promise<void>;
      /** Where the cycle completion logs; silent by default. */
      completionLogger?: Logger;
      /** Called as the cycle completion reads stored scores (a snapshot), with the ids asked. */
      onScoresRead?: (deviceIds: string[]) => void;
      /** The deployment's published store: a tenant whose record is gone is a deleted one. */
      onlyRegisteredTenants?: boolean;
    } = {},
  ) {
    let failures = options.failSummaries ?? 0;
    let failFirstOf = options.failFirstSummaryOf;
    let lockFailures = options.failLocks ?? 0;
    let sentFailures = options.failAfterSentMarker ?? 0;
    let recordFailures = options.failRecords ?? 0;
    const publisher: Publisher = {
      send: async (topic, _contract, messages) => {
        const ofCycle = (messages[0]?.value as VmsRiskSummary | undefined)?.cycleId;
        if (topic === topics.vmsRiskSummary && (failures > 0 || ofCycle === failFirstOf)) {
          if (ofCycle === failFirstOf) failFirstOf = undefined;
          else failures--;
          options.onSummaryFailure?.();
          throw new Error('the broker is unavailable');
        }
        if (topic === topics.vmsRiskSummary && options.summaryDelayMs)
          await new Promise((resolve) => setTimeout(resolve, options.summaryDelayMs));
        if (topic === topics.vmsRiskSummary) await options.beforeSummarySent?.();
        for (const m of messages)
          sent.push({ topic, key: m.key, value: m.value, ...(m.json ? { json: m.json } : {}) });
        if (topic === topics.vmsRiskScores) await options.afterScoresSent?.();
      },
      sendRaw: async () => undefined,
      close: async () => undefined,
    };
    const cycles = createCycleStore(redis.client, redis.prefix);
    const store = createPublishedStore(redis.client, redis.prefix, {
      onlyRegisteredTenants: options.onlyRegisteredTenants ?? false,
    });
    const published: typeof store = {
      ...store,
      lockSummary: async (...args) => {
        if (lockFailures > 0) {
          lockFailures--;
          throw new Error('Connection is closed.');
        }
        return store.lockSummary(...args);
      },
      summarySent: async (tenantId, cycleId, token) => {
        if (sentFailures > 0) {
          sentFailures--;
          await redis.client.set(sentMarker(tenantId, cycleId), '1');
          await redis.client.del(`${redis.prefix}summary-lock:${tenantId}:${cycleId}`);
          throw new Error('Connection is closed.');
        }
        return store.summarySent(tenantId, cycleId, token);
      },
    };
    const metrics = new Registry({ processMetrics: false });
    const inOrder = createInOrder();
    // One replica: its own queue and its own id as the holder of tenant leases.
    const leasing = tenantLeasing();
    // Its rebuild of what VMS holds, from a vms.risk-scores without records.
    const rebuild = createPublishedRebuilder({ published, readKeys: async () => 0, logger: silentLogger });
    const completion = createCycleCompletion({
      cycles,
      published,
      scores: {
        ...createScoreStore(redis.client, redis.prefix),
        getDeviceScores: (tenantId, deviceIds) => {
          options.onScoresRead?.(deviceIds);
          return createScoreStore(redis.client, redis.prefix).getDeviceScores(tenantId, deviceIds);
        },
      },
      publisher,
      topics,
      logger: options.completionLogger ?? silentLogger,
      metrics,
      snapshotEveryCycles: options.snapshotEveryCycles ?? 24,
      tombstoneAfterCycles: options.tombstoneAfterCycles ?? 3,
      ...(options.tombstoneHold ? { tombstoneHold: options.tombstoneHold } : {}),
      ...(options.summaryLockMs === undefined ? {} : { summaryLockMs: options.summaryLockMs }),
      ...(options.sweepQueueWaitMs === undefined ? {} : { sweepQueueWaitMs: options.sweepQueueWaitMs }),
      inOrder,
      leasing,
      rebuild,
      now: () => now,
    });
    const handler = createPublishHandler({
      cycles: {
        recordBatch: async (...args) => {
          if (recordFailures > 0) {
            recordFailures--;
            throw new Error('the process was killed');
          }
          return cycles.recordBatch(...args);
        },
      },
      published,
      completion,
      inOrder,
      leasing,
      publisher,
      topic: topics.vmsRiskScores,
      logger: silentLogger,
      metrics,
    });
    const begin = async (cycle: number) => {
      await cycles.begin({
        tenantId: 't1',
        cycleId: `c${cycle}`,
        startedAt: minute(cycle * 10),
        deadlineAt: minute(cycle * 10 + 5),
      });
    };
    const scores = createScoreStore(redis.client, redis.prefix);
    // As the scorer does before it emits a batch: the snapshot reads the stored scores.
    const handle = async (batch: ScoreBatch) => {
      const { cycleId, cycleStartedAt, collectedAt, scoredAt } = batch;
      await scores.saveScores(
        batch.tenantId,
        { cycleId, cycleStartedAt, collectedAt, scoredAt },
        batch.devices,
      );
      await handler(message(batch));
    };
    const tenants = createTenantsHandler({
      published,
      tenants: tenantStore(),
      tombstones: createTombstones({ published, scores, publisher, topic: topics.vmsRiskScores, metrics }),
      scores,
      inOrder,
      leasing,
      rebuild,
      logger: silentLogger,
    });
    // A tenant's deletion as the registrar writes it on urs.tenants, at `at` (with its revision, if given).
    const deleteTenant = (at: string, revision?: number) =>
      tenants(
        inboundMessage<TenantRecord>(null, {
          topic: 'urs.tenants',
          key: 't1',
          timestamp: Date.parse(at),
          headers: revision === undefined ? {} : { [TENANT_REVISION_HEADER]: Buffer.from(String(revision)) },
        }),
      );
    return { handler: handle, completion, cycles, begin, metrics, deleteTenant, rebuild };
  }

  /** A cycle's sent summary's marker (it expires two days after the send). */
  const sentMarker = (tenantId: string, cycleId: string): string =>
    `${redis.prefix}summary-sent:${tenantId}:${cycleId}`;
  const owed = () => createPublishedStore(redis.client, redis.prefix).summariesOwed(Number.MAX_SAFE_INTEGER);

  const summaries = (): VmsRiskSummary[] =>
    sent.filter((m) => m.topic === topics.vmsRiskSummary).map((m) => m.value as VmsRiskSummary);
  const records = (cycleId?: string) =>
    sent.filter(
      (m) =>
        m.topic === topics.vmsRiskScores &&
        (cycleId === undefined || (m.value as VmsRiskScore | null)?.cycleId === cycleId),
    );

  it('createPublishHandler should publish every device once and one summary when the last batch is in, even when batches come twice', async () => {
    const { handler, begin } = build();
    now = new Date(minute(13));
    await begin(1);
    const first = scoreBatch(1, 0, [
      device('a', 10, 'Trustworthy'),
      device('b', 90, 'High Risk', ['criticalCves']),
    ]);
    const last = scoreBatch(1, 1, [device('c', 50, 'Moderate Risk')], 2);
    await handler(first);
    expect(summaries()).toEqual([]);
    await handler(first);
    await handler(last);
    await handler(last);
    expect(
      records()
        .map((m) => m.key)
        .sort(),
    ).toEqual(['t1/a', 't1/b', 't1/c']);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]).toMatchObject({
      tenantId: 't1',
      cycleId: 'c1',
      status: 'complete',
      devices: { total: 3, scored: 3, incomplete: 1, failed: 0 },
      bands: { Trustworthy: 1, 'Low Risk': 0, 'Moderate Risk': 1, Suspicious: 0, 'High Risk': 1 },
      published: { changed: 3, snapshot: false, tombstones: 0 },
      collectedAt: minute(11),
      timings: { collectMs: 60_000, scoreToPublishMs: 60_000, cycleMs: 180_000 },
    });
    expect(records()[0]?.value).toMatchObject({
      schemaVersion: 1,
      tenantId: 't1',
      cycleId: 'c1',
      computedAt: minute(12),
    });
  });

  it("createPublishHandler should send a record's JSON made of the device's bytes in the consumed batch, exactly as serialising the record makes it", async () => {
    const { handler, begin } = build();
    await begin(1);
    const devices = Array.from({ length: 300 }, (_, n) =>
      device(`d${n}`, n % 100, 'Low Risk', n % 3 === 0 ? ['criticalCves'] : []),
    );
    const { devices: _devices, ...header } = scoreBatch(1, 0, devices);
    // As the runner hands it over: a large batch read from the bytes the scorer produced.
    const consumed = parseJsonBytes(deviceBatchMessage('t1', header, devices).json) as ScoreBatch;
    await handler(consumed);
    const made = records('c1');
    expect(made).toHaveLength(300);
    for (const record of made) {
      expect(Buffer.isBuffer(record.json)).toBe(true);
      expect(record.json?.toString()).toBe(JSON.stringify(record.value));
    }
    // A batch parsed whole (a small one) is serialised as before.
    await handler(scoreBatch(1, 1, [device('small', 5, 'Trustworthy')]));
    expect(records('c1').find((record) => record.key === 't1/small')?.json).toBeUndefined();
  });

  it('createPublishHandler should republish only changed devices, and never a stale score over a newer one', async () => {
    const { handler, begin } = build();
    await begin(1);
    await handler(
      scoreBatch(
        1,
        0,
        [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk'), device('c', 50, 'Moderate Risk')],
        1,
      ),
    );
    await begin(2);
    await handler(
      scoreBatch(
        2,
        0,
        [device('a', 10, 'Trustworthy'), device('b', 70, 'Suspicious'), device('c', 50, 'Moderate Risk')],
        1,
      ),
    );
    expect(records('c2').map((m) => m.key)).toEqual(['t1/b']);
    expect(summaries()[1]?.published.changed).toBe(1);
    // A late redelivery of cycle 1 does not put b's old score back.
    const before = records().length;
    await handler(
      scoreBatch(
        1,
        0,
        [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk'), device('c', 50, 'Moderate Risk')],
        1,
      ),
    );
    expect(records().length).toBe(before);
    expect(summaries()).toHaveLength(2);
  });

  it('createCycleCompletion should tombstone a device absent from N completed cycles and snapshot every Nth cycle', async () => {
    const { handler, begin } = build({ tombstoneAfterCycles: 2, snapshotEveryCycles: 3 });
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('gone', 30, 'Low Risk')], 1));
    await begin(2);
    await handler(scoreBatch(2, 0, [device('a', 10, 'Trustworthy')], 1));
    expect(records().filter((m) => m.value === null)).toEqual([]);
    await begin(3);
    await handler(scoreBatch(3, 0, [device('a', 10, 'Trustworthy')], 1));
    expect(
      records()
        .filter((m) => m.value === null)
        .map((m) => m.key),
    ).toEqual(['t1/gone']);
    expect(summaries()[2]?.published).toEqual({ changed: 0, snapshot: true, tombstones: 1 });
    // The snapshot of cycle 3 carries the unchanged device a again.
    expect(records().filter((m) => m.key === 't1/a')).toHaveLength(2);
  });

  it('createCycleCompletion should keep a tombstoned device gone when a batch of an older cycle comes again, and publish it from a newer cycle', async () => {
    const { handler, begin } = build({ tombstoneAfterCycles: 2 });
    const scores = createScoreStore(redis.client, redis.prefix);
    const late = scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('gone', 30, 'Low Risk')], 1);
    await begin(1);
    await handler(late);
    for (const cycle of [2, 3]) {
      await begin(cycle);
      await handler(scoreBatch(cycle, 0, [device('a', 10, 'Trustworthy')], 1));
    }
    const tombstones = () => records().filter((m) => m.value === null);
    expect(tombstones().map((m) => m.key)).toEqual(['t1/gone']);
    // Cycle 1's batch delivered again after the tombstone: its record not sent again, its score not stored.
    const sentOfCycle1 = records('c1').length;
    await handler(late);
    expect(records('c1')).toHaveLength(sentOfCycle1);
    expect(await scores.getDeviceScore('t1', 'gone')).toBeNull();
    // Listed again by cycle 4: published, and not tombstoned again by its completion.
    await begin(4);
    await handler(scoreBatch(4, 0, [device('a', 10, 'Trustworthy'), device('gone', 30, 'Low Risk')], 1));
    expect(records('c4').map((m) => m.key)).toEqual(['t1/gone']);
    expect(tombstones()).toHaveLength(1);
  });

  it("createCycleCompletion should keep the score a newer cycle stored for a device an older cycle's completion, coming after it, tombstones", async () => {
    const { handler, begin } = build({ tombstoneAfterCycles: 2 });
    const scores = createScoreStore(redis.client, redis.prefix);
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('back', 30, 'Low Risk')], 1));
    await begin(2);
    await handler(scoreBatch(2, 0, [device('a', 10, 'Trustworthy')], 1));
    await begin(3);
    await begin(4);
    // Cycle 4 lists the device again: its score is stored, its batch not yet published, when cycle 3
    // completes without the device and tombstones it.
    const newer = scoreBatch(4, 0, [device('back', 50, 'Moderate Risk')]);
    const { cycleId, cycleStartedAt, collectedAt, scoredAt } = newer;
    await scores.saveScores('t1', { cycleId, cycleStartedAt, collectedAt, scoredAt }, newer.devices);
    await handler(scoreBatch(3, 0, [device('a', 10, 'Trustworthy')], 1));
    expect(
      records()
        .filter((m) => m.value === null)
        .map((m) => m.key),
    ).toEqual(['t1/back']);
    expect((await scores.getDeviceScore('t1', 'back'))?.cycleId).toBe('c4');
  });

  it("createCycleCompletion should send in a cycle's snapshot the devices a later cycle recorded before the cycle completed", async () => {
    const { handler, begin } = build({ snapshotEveryCycles: 1 });
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk')], 2));
    // The next cycle's first batch is recorded before the cycle's last one comes (a poller taken over after
    // its last batch, say): device a's newest cycle is then the next one.
    await begin(2);
    await handler(scoreBatch(2, 0, [device('a', 10, 'Trustworthy')], 2));
    await handler(scoreBatch(1, 1, [device('c', 50, 'Moderate Risk')], 2));
    expect(summaries()[0]).toMatchObject({ cycleId: 'c1', published: { snapshot: true } });
    const snapshotted = sent
      .slice(sent.findIndex((m) => m.topic === topics.vmsRiskScores && m.key === 't1/c') + 1)
      .filter((m) => m.topic === topics.vmsRiskScores)
      .map((m) => m.key)
      .sort();
    expect(snapshotted).toEqual(['t1/a', 't1/b', 't1/c']);
  });

  it("createCycleCompletion should read, build and send a large fleet's snapshot 500 devices at a time, in device id order", async () => {
    const reads: { ids: number; sentBefore: number }[] = [];
    const { handler, begin } = build({
      snapshotEveryCycles: 1,
      onScoresRead: (deviceIds) => reads.push({ ids: deviceIds.length, sentBefore: records().length }),
    });
    await begin(1);
    const ids = Array.from({ length: 1_201 }, (_, n) => `d${(n * 7919) % 1_201}`);
    await handler(
      scoreBatch(
        1,
        0,
        ids.map((id) => device(id, 10, 'Trustworthy')),
        1,
      ),
    );
    // The batch's 1,201 records first; then each 500 devices' scores read once the previous 500 records went out.
    expect(reads).toEqual([
      { ids: 500, sentBefore: 1_201 },
      { ids: 500, sentBefore: 1_701 },
      { ids: 201, sentBefore: 2_201 },
    ]);
    expect(
      records()
        .slice(1_201)
        .map((m) => m.key),
    ).toEqual(ids.sort().map((id) => `t1/${id}`));
    expect(summaries()[0]?.published).toMatchObject({ snapshot: true });
  });

  it('createCycleCompletion should hold the tombstones of most of a fleet gone at once until they were absent for the hold cycles', async () => {
    const { handler, begin, metrics } = build({
      tombstoneAfterCycles: 2,
      tombstoneHold: { maxSharePercent: 50, minDevices: 1, cycles: 4 },
    });
    await begin(1);
    const fleet = ['a', 'b', 'c', 'stay'].map((id) => device(id, 10, 'Trustworthy'));
    await handler(scoreBatch(1, 0, fleet, 1));
    // Then the listing answers one device of four (an empty or cut answer of Microsoft's looks so).
    for (const cycle of [2, 3, 4]) {
      await begin(cycle);
      await handler(scoreBatch(cycle, 0, [device('stay', 10, 'Trustworthy')], 1));
    }
    expect(records().filter((m) => m.value === null)).toEqual([]);
    expect(summaries().map((summary) => summary.published.tombstones)).toEqual([0, 0, 0, 0]);
    expect(metrics.expose()).toMatch(/^urs_vms_tombstones_held_total 6$/m);
    await begin(5);
    await handler(scoreBatch(5, 0, [device('stay', 10, 'Trustworthy')], 1));
    expect(
      records()
        .filter((m) => m.value === null)
        .map((m) => m.key)
        .sort(),
    ).toEqual(['t1/a', 't1/b', 't1/c']);
    expect(summaries()[4]?.published.tombstones).toBe(3);
  });

  it('createCycleCompletion should count the tombstones a cycle held once, its summary sent again after its first send failed', async () => {
    const { handler, begin, metrics } = build({
      tombstoneAfterCycles: 1,
      tombstoneHold: { maxSharePercent: 50, minDevices: 1, cycles: 4 },
      failFirstSummaryOf: 'c2',
    });
    await begin(1);
    await handler(
      scoreBatch(
        1,
        0,
        ['a', 'b', 'c', 'stay'].map((id) => device(id, 10, 'Trustworthy')),
        1,
      ),
    );
    // Cycle 2 lists one device of four: its completion holds the other three's tombstones.
    await begin(2);
    const last = scoreBatch(2, 0, [device('stay', 10, 'Trustworthy')], 1);
    await expect(handler(last)).rejects.toThrow('the broker is unavailable');
    // Redelivered: the summary goes out this time, the cycle's hold as the first call decided it.
    await handler(last);
    expect(summaries().map((summary) => summary.cycleId)).toEqual(['c1', 'c2']);
    expect(records().filter((m) => m.value === null)).toEqual([]);
    expect(metrics.expose()).toMatch(/^urs_vms_tombstones_held_total 3$/m);
  });

  it('createCycleCompletion should tombstone a device VMS holds at the first complete cycle that lists it merged, and publish it again once listed unmerged', async () => {
    const { handler, begin, cycles } = build();
    const tombstones = () =>
      records()
        .filter((m) => m.value === null)
        .map((m) => m.key);
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk')], 1));
    // Cycle 2 lists a merged into b (and a device merged before VMS ever held it): a goes with its summary.
    await begin(2);
    await cycles.mergedDevices('t1', 'c2', ['a', 'never-published']);
    await handler(scoreBatch(2, 0, [device('b', 30, 'Low Risk')], 1));
    expect(tombstones()).toEqual(['t1/a']);
    expect(summaries()[1]).toMatchObject({ cycleId: 'c2', published: { tombstones: 1 } });
    // Listed again unmerged (split back out): published again, as any device after its tombstone.
    await begin(3);
    await handler(scoreBatch(3, 0, [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk')], 1));
    expect(records('c3').map((m) => m.key)).toEqual(['t1/a']);
    expect(tombstones()).toEqual(['t1/a']);
  });

  it('createCycleCompletion should send the tombstone of a device listed merged once, its summary sent again after its first send failed', async () => {
    const { handler, begin, cycles } = build({ failFirstSummaryOf: 'c2' });
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk')], 1));
    await begin(2);
    await cycles.mergedDevices('t1', 'c2', ['a']);
    const last = scoreBatch(2, 0, [device('b', 30, 'Low Risk')], 1);
    await expect(handler(last)).rejects.toThrow('the broker is unavailable');
    await handler(last);
    expect(
      records()
        .filter((m) => m.value === null)
        .map((m) => m.key),
    ).toEqual(['t1/a']);
    expect(summaries().map((summary) => [summary.cycleId, summary.published.tombstones])).toEqual([
      ['c1', 0],
      ['c2', 1],
    ]);
  });

  it('closeOverdue should tombstone no device a partial cycle lists merged', async () => {
    const { handler, begin, cycles, completion } = build();
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk')], 1));
    await begin(2);
    await cycles.mergedDevices('t1', 'c2', ['a']);
    await cycles.listed('t1', 'c2', { totalBatches: 2, totalDevices: 2, listedAt: minute(21) });
    await handler(scoreBatch(2, 0, [device('b', 30, 'Low Risk')]));
    now = new Date(minute(26));
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries()[1]).toMatchObject({ cycleId: 'c2', status: 'partial', published: { tombstones: 0 } });
    expect(records().filter((m) => m.value === null)).toEqual([]);
  });

  it('createCycleCompletion should send the tombstone of a device listed merged while the brake holds those of devices gone at once', async () => {
    const { handler, begin, cycles, metrics } = build({
      tombstoneAfterCycles: 1,
      tombstoneHold: { maxSharePercent: 50, minDevices: 1, cycles: 4 },
    });
    await begin(1);
    const fleet = ['a', 'b', 'c', 'd', 'stay'].map((id) => device(id, 10, 'Trustworthy'));
    await handler(scoreBatch(1, 0, fleet, 1));
    // Cycle 2 lists a merged into stay, and lacks b, c and d: three of five devices, held.
    await begin(2);
    await cycles.mergedDevices('t1', 'c2', ['a']);
    await handler(scoreBatch(2, 0, [device('stay', 10, 'Trustworthy')], 1));
    expect(
      records()
        .filter((m) => m.value === null)
        .map((m) => m.key),
    ).toEqual(['t1/a']);
    expect(summaries()[1]?.published.tombstones).toBe(1);
    expect(metrics.expose()).toMatch(/^urs_vms_tombstones_held_total 3$/m);
  });

  it('closeOverdue should publish a cycle past its deadline once, as partial, with the devices never scored as failed', async () => {
    const { handler, begin, completion, cycles } = build();
    await begin(1);
    await cycles.listed('t1', 'c1', { totalBatches: 2, totalDevices: 3, listedAt: minute(11) });
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk')]));
    now = new Date(minute(16));
    expect(await completion.closeOverdue()).toBe(1);
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]).toMatchObject({ status: 'partial', devices: { total: 3, scored: 2, failed: 1 } });
    // The late batch still publishes its device record, but no second summary.
    await handler(scoreBatch(1, 1, [device('c', 50, 'Moderate Risk')], 2));
    expect(records().map((m) => m.key)).toContain('t1/c');
    expect(summaries()).toHaveLength(1);
  });

  it('closeOverdue should publish a withdrawn cycle whose first batch reached Kafka after all and was dead-lettered, as partial', async () => {
    const { completion, cycles, begin } = build();
    await begin(1);
    // The poller's first send failed only in its answer: it withdrew the cycle, its batch went on and was lost.
    const at = minute(11);
    expect(await cycles.withdraw('t1', 'c1', { devices: 2, code: 'KAFKA_UNAVAILABLE', at })).toBe(true);
    expect(await cycles.lost('t1', 'c1', 0, 2, Date.parse(minute(12)))).toBe(true);
    now = new Date(minute(12));
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]).toMatchObject({
      cycleId: 'c1',
      status: 'partial',
      devices: { scored: 0, failed: 2 },
    });
  });

  it('closeOverdue should send no summary of a cycle open when its tenant was deleted', async () => {
    const { handler, begin, completion, cycles, deleteTenant } = build();
    await begin(1);
    await cycles.listed('t1', 'c1', { totalBatches: 2, totalDevices: 3, listedAt: minute(11) });
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk')]));
    await deleteTenant(minute(12));
    expect(
      records()
        .filter((m) => m.value === null)
        .map((m) => m.key),
    ).toEqual(['t1/a', 't1/b']);
    now = new Date(minute(16));
    expect(await completion.closeOverdue()).toBe(0);
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries()).toEqual([]);
  });

  it("a deletion older than the tenant's record (read again from the topic's beginning) should tombstone nothing, and remove the scores from before it", async () => {
    const { handler, begin, deleteTenant } = build();
    const scores = createScoreStore(redis.client, redis.prefix);
    const stored = async (): Promise<string[]> =>
      (await scores.listDeviceScores('t1')).items.map((item) => `${item.device.deviceId}@${item.cycleId}`);
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk')]));
    // Scored in cycle 1 and never published (its batch not sent on before the deletion); then scored in
    // the registration's first cycle, after the deletion.
    const save = async ({ cycleId, cycleStartedAt, collectedAt, scoredAt, devices }: ScoreBatch) => {
      await scores.saveScores('t1', { cycleId, cycleStartedAt, collectedAt, scoredAt }, devices);
    };
    await save(scoreBatch(1, 1, [device('n', 50, 'Moderate Risk')]));
    await save(scoreBatch(2, 0, [device('b', 40, 'Low Risk')]));
    // Deleted at revision 3, registered again at revision 5: the registrar's record in Redis is revision 5.
    await tenantStore().put(tenantRecord('t1', { revision: 5 }));
    await deleteTenant(minute(12), 3);
    expect(records().filter((m) => m.value === null)).toEqual([]);
    // What cycle 1 scored is the deleted registration's: the registrar's API would show it as the new one's.
    expect(await stored()).toEqual(['b@c2']);
    // A deletion after that record is acted on.
    await deleteTenant(minute(13), 6);
    expect(
      records()
        .filter((m) => m.value === null)
        .map((m) => m.key),
    ).toEqual(['t1/a', 't1/b']);
  });

  it('a deletion read while Redis lost the tenant records should be held until the registrar rebuilds them, and tombstone nothing of a tenant registered again since', async () => {
    const { handler, begin, deleteTenant } = build({ onlyRegisteredTenants: true });
    // Deleted at revision 3 and registered again at revision 5; the publisher, behind on urs.tenants, has
    // read neither when Redis comes back empty.
    await deleteKeysMatching(redis.client, `${redis.prefix}*`);
    await begin(1);
    const batch = scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk')], 1);
    // A batch is neither published nor dropped for its missing record: it waits for the records too.
    await expect(handler(batch)).rejects.toMatchObject({ code: 'TENANTS_NOT_REBUILT', canRetry: true });
    expect(records()).toEqual([]);
    const failure = await deleteTenant(minute(12), 3).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toMatchObject({ code: 'TENANTS_NOT_REBUILT', canRetry: true });
    expect(isInfrastructureFault(failure)).toBe(true);
    expect(records().filter((m) => m.value === null)).toEqual([]);

    // The registrar wrote the records back: the deletion is older than the tenant's record.
    await tenantStore().put(tenantRecord('t1', { revision: 5 }));
    await createRegistrarStateStore(redis.client, redis.prefix).markRebuilt(new Date());
    await deleteTenant(minute(12), 3);
    expect(records().filter((m) => m.value === null)).toEqual([]);
    // The batch, tried again, is the registration's.
    await handler(batch);
    expect(records('c1').map((m) => m.key)).toEqual(['t1/a', 't1/b']);
  });

  it('with the deployment store, a batch of a deleted tenant queued while Redis lost its data should be held until the registrar rebuilds the tenants, then dropped', async () => {
    const { handler, begin, deleteTenant } = build({ onlyRegisteredTenants: true });
    const registrar = createRegistrarStateStore(redis.client, redis.prefix);
    await registrar.markRebuilt(new Date());
    await tenantStore().put(tenantRecord('t1', { revision: 1 }));
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    // Deleted (revision 2): the registrar removes the record, the publisher tombstones a.
    await tenantStore().remove('t1', 2);
    await deleteTenant(minute(12), 2);
    expect(records().map((m) => [m.key, m.value === null])).toEqual([
      ['t1/a', false],
      ['t1/a', true],
    ]);

    // Redis comes back empty: the deletion's marker is gone with the rest. The cycle's last batch, scored
    // before the deletion, is still on urs.device-scores.
    await deleteKeysMatching(redis.client, `${redis.prefix}*`);
    const last = scoreBatch(1, 1, [device('b', 30, 'Low Risk')], 2);
    const failure = await handler(last).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toMatchObject({ code: 'TENANTS_NOT_REBUILT', canRetry: true });
    expect(isInfrastructureFault(failure)).toBe(true);
    // The registrar rebuilt the records, the tenant not among them: the batch is a deleted tenant's.
    await registrar.markRebuilt(new Date());
    await handler(last);
    expect(records()).toHaveLength(2);
    expect(summaries()).toEqual([]);
  });

  it('with the deployment store, closeOverdue should send no summary of a tenant whose record the registrar removed', async () => {
    const { handler, begin, completion, cycles } = build({ onlyRegisteredTenants: true });
    await createRegistrarStateStore(redis.client, redis.prefix).markRebuilt(new Date());
    await tenantStore().put(tenantRecord('t1', { revision: 1 }));
    await begin(1);
    await cycles.listed('t1', 'c1', { totalBatches: 2, totalDevices: 3, listedAt: minute(11) });
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    // Deleted: the record removed, the deletion not read by the publisher yet; the cycle's deadline passes.
    await tenantStore().remove('t1', 2);
    now = new Date(minute(16));
    await completion.closeOverdue();
    expect(summaries()).toEqual([]);
    expect(await owed()).toEqual([]);
  });

  it('with the deployment store, closeOverdue should leave a summary to a later sweep, not count it failed, while the registrar has not rebuilt the tenant records', async () => {
    const { handler, begin, completion, cycles, metrics } = build({ onlyRegisteredTenants: true });
    // A cycle under way when Redis lost the tenant records (a wipe), and the registrar has not written them
    // back when its deadline passes.
    await tenantStore().put(tenantRecord('t1', { revision: 1 }));
    await createRegistrarStateStore(redis.client, redis.prefix).markRebuilt(new Date());
    await begin(1);
    await cycles.listed('t1', 'c1', { totalBatches: 2, totalDevices: 3, listedAt: minute(11) });
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    await deleteKeysMatching(redis.client, `${redis.prefix}tenant*`);
    now = new Date(minute(16));
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries()).toEqual([]);
    expect(metrics.expose()).toMatch(/^urs_summary_sweep_failures_total 0$/m);
    // The registrar wrote the records back: a later sweep sends it (as owed, once its lock would have lapsed).
    await tenantStore().put(tenantRecord('t1', { revision: 1 }));
    await createRegistrarStateStore(redis.client, redis.prefix).markRebuilt(new Date());
    now = new Date(minute(20));
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries()).toMatchObject([{ cycleId: 'c1', status: 'partial' }]);
  });

  it('createCycleCompletion should send a summary whose first send failed on the redelivery, once', async () => {
    const { handler, begin } = build({ failSummaries: 1 });
    now = new Date(minute(13));
    await begin(1);
    const last = scoreBatch(1, 0, [device('a', 10, 'Trustworthy')], 1);
    await expect(handler(last)).rejects.toThrow('the broker is unavailable');
    expect(summaries()).toEqual([]);
    await handler(last);
    await handler(last);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]).toMatchObject({ status: 'complete', devices: { scored: 1 } });
  });

  /**
   * c1 complete, its summary sent at `c1SentAt`; c2 one batch of two in, closed as partial 30 s past its
   * deadline (minute 25). Answers the metrics exposed then.
   */
  async function oneCompleteOnePartial(c1SentAt: Date): Promise<string> {
    const { handler, begin, completion, cycles, metrics } = build();
    await begin(1);
    now = c1SentAt;
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')], 1));
    await begin(2);
    await cycles.listed('t1', 'c2', { totalBatches: 2, totalDevices: 2, listedAt: minute(21) });
    await handler(scoreBatch(2, 0, [device('a', 10, 'Trustworthy')]));
    now = new Date(Date.parse(minute(25)) + 30_000);
    expect(await completion.closeOverdue()).toBe(1);
    return metrics.expose();
  }

  it("createCycleCompletion should time each summary from its cycle's last vulnerability response in urs_collect_to_summary_seconds, by status", async () => {
    // c1 sent 1.5 s after its last vulnerability response (minute 11); c2 past its deadline (minute 25), 4.5
    // minutes after its collectedAt (minute 21): closed as partial.
    const exposed = await oneCompleteOnePartial(new Date(Date.parse(minute(11)) + 1_500));
    const line = (labels: string): string | undefined =>
      exposed.split('\n').find((text) => text.startsWith(`urs_collect_to_summary_seconds${labels}`));
    expect(line('_bucket{status="complete",le="1"}')).toMatch(/ 0$/);
    expect(line('_bucket{status="complete",le="2"}')).toMatch(/ 1$/);
    expect(line('_sum{status="complete"}')).toMatch(/ 1\.5$/);
    expect(line('_bucket{status="partial",le="120"}')).toMatch(/ 0$/);
    expect(line('_bucket{status="partial",le="300"}')).toMatch(/ 1$/);
    expect(line('_sum{status="partial"}')).toMatch(/ 270$/);
  });

  it("createCycleCompletion should time each summary from its cycle's last score in urs_score_to_publish_seconds, by status", async () => {
    // c1 scored at minute 12, sent 2 s later; c2 scored at minute 22, closed as partial at its deadline (minute
    // 25) 30 s on: its wait for a batch that never came, kept apart from the complete cycles'.
    const exposed = await oneCompleteOnePartial(new Date(Date.parse(minute(12)) + 2_000));
    const line = (labels: string): string | undefined =>
      exposed.split('\n').find((text) => text.startsWith(`urs_score_to_publish_seconds${labels}`));
    expect(line('_sum{status="complete"}')).toMatch(/ 2$/);
    expect(line('_count{status="complete"}')).toMatch(/ 1$/);
    expect(line('_sum{status="partial"}')).toMatch(/ 210$/);
  });

  it('closeOverdue should send a partial summary whose first send failed, on a later sweep', async () => {
    const { handler, begin, completion, metrics } = build({ failSummaries: 1 });
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    now = new Date(minute(16));
    expect(await completion.closeOverdue()).toBe(0);
    expect(metrics.expose()).toContain('urs_summary_sweep_failures_total 1');
    expect(await completion.closeOverdue()).toBe(0);
    now = new Date(minute(17));
    expect(await completion.closeOverdue()).toBe(1);
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]?.status).toBe('partial');
  });

  it("closeOverdue should send a snapshot cycle's snapshot and tombstones once while its summary cannot be sent, trying it less and less often", async () => {
    const { handler, begin, completion, metrics } = build({
      snapshotEveryCycles: 1,
      tombstoneAfterCycles: 1,
      failSummaries: 4,
    });
    // Device gone was last seen in a cycle before c1: c1's completion tombstones it.
    await createPublishedStore(redis.client, redis.prefix).commit('t1', Date.parse(minute(0)), [
      { deviceId: 'gone', score: 10, band: 'Trustworthy' },
    ]);
    now = new Date(minute(13));
    await begin(1);
    const last = scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk')], 1);
    await expect(handler(last)).rejects.toThrow('the broker is unavailable');
    // The batch's two records, the tombstone, and the snapshot's two records.
    expect(records()).toHaveLength(5);
    const failures = () => Number(/^urs_summary_sweep_failures_total (\d+)$/m.exec(metrics.expose())?.[1]);
    const sweepAt = async (seconds: number) => {
      now = new Date(Date.parse(minute(13)) + seconds * 1000);
      await completion.closeOverdue();
    };
    // Owed once the summary lock (30 s) would have lapsed: tried, and refused again.
    await sweepAt(31);
    expect(failures()).toBe(1);
    expect(records()).toHaveLength(5);
    // Tried again 30 s later, then 60 s, then 120 s: not at every sweep.
    await sweepAt(33);
    expect(failures()).toBe(1);
    await sweepAt(62);
    expect(failures()).toBe(2);
    await sweepAt(90);
    await sweepAt(121);
    expect(failures()).toBe(2);
    await sweepAt(123);
    expect(failures()).toBe(3);
    await sweepAt(240);
    expect(summaries()).toEqual([]);
    await sweepAt(244);
    expect(failures()).toBe(3);
    expect(records()).toHaveLength(5);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]?.published).toEqual({ changed: 2, snapshot: true, tombstones: 1 });
    expect(await owed()).toEqual([]);
  });

  it('closeOverdue should wait before trying again an owed summary from the time its send failed, not from the start of the sweep', async () => {
    const at = (seconds: number) => new Date(Date.parse(minute(16)) + seconds * 1000);
    // The second send fails five minutes into its sweep (a slow broker, many tenants before it).
    let sends = 0;
    const { handler, begin, completion, metrics } = build({
      failSummaries: 3,
      onSummaryFailure: () => {
        if (++sends === 2) now = at(31 + 300);
      },
    });
    const failures = () => Number(/^urs_summary_sweep_failures_total (\d+)$/m.exec(metrics.expose())?.[1]);
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    now = at(0);
    await completion.closeOverdue();
    expect(failures()).toBe(1);
    now = at(31);
    await completion.closeOverdue();
    expect(failures()).toBe(2);
    // The next sweep, a second after the failure: the 30 s wait has not passed since the send failed.
    now = at(31 + 301);
    await completion.closeOverdue();
    expect(failures()).toBe(2);
    now = at(31 + 300 + 31);
    await completion.closeOverdue();
    expect(failures()).toBe(3);
  });

  it('createPublishHandler should not publish the score a correction replaced when its first batch comes again', async () => {
    const { handler, begin } = build();
    await begin(1);
    await handler(scoreBatch(1, 0, [device('x', 0, 'Trustworthy'), device('w', 0, 'Trustworthy')]));
    await handler({
      ...scoreBatch(1, 1, [device('x', 30, 'Low Risk')], 2),
      replaces: { bands: { Trustworthy: 1 }, incomplete: 0 },
    });
    // The publisher stopped before committing: both come again, the first batch first.
    await handler(scoreBatch(1, 0, [device('x', 0, 'Trustworthy'), device('w', 0, 'Trustworthy')]));
    const scoresOfX = () =>
      records('c1')
        .filter((m) => m.key === 't1/x')
        .map((m) => (m.value as VmsRiskScore).score);
    expect(scoresOfX()).toEqual([0, 30]);
    await handler({
      ...scoreBatch(1, 1, [device('x', 30, 'Low Risk')], 2),
      replaces: { bands: { Trustworthy: 1 }, incomplete: 0 },
    });
    expect(scoresOfX()).toEqual([0, 30]);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]?.bands).toMatchObject({ Trustworthy: 1, 'Low Risk': 1 });
    // The next cycle's scores are newer than the correction.
    await begin(2);
    await handler(scoreBatch(2, 0, [device('x', 0, 'Trustworthy'), device('w', 0, 'Trustworthy')], 1));
    expect(records('c2').map((m) => m.key)).toEqual(['t1/x']);
  });

  it("createPublishHandler should complete a bulk cycle whose poller's listing is missing only once its correction batches are in", async () => {
    const { handler, begin, cycles } = build();
    await begin(1);
    // The vuln-fetcher added one correction batch after the poller's one, and the last batch's total with it.
    await cycles.addCorrections('t1', 'c1', 1);
    await handler(scoreBatch(1, 0, [device('x', 0, 'Trustworthy'), device('w', 0, 'Trustworthy')], 2));
    expect(summaries()).toEqual([]);
    await handler({
      ...scoreBatch(1, 1, [device('x', 30, 'Low Risk')]),
      replaces: { bands: { Trustworthy: 1 }, incomplete: 0 },
    });
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]).toMatchObject({ status: 'complete', bands: { Trustworthy: 1, 'Low Risk': 1 } });
  });

  it('createPublishHandler should publish a device again when its addresses change with its score', async () => {
    const { handler, begin } = build();
    const at = (ip: string) => scoredDevice('m', 10, 'Trustworthy', { lastIpAddress: ip });
    await begin(1);
    await handler(scoreBatch(1, 0, [at('10.0.0.1')], 1));
    await begin(2);
    await handler(scoreBatch(2, 0, [at('10.0.0.1')], 1));
    await begin(3);
    await handler(scoreBatch(3, 0, [at('10.9.9.9')], 1));
    const published = records()
      .filter((m) => m.key === 't1/m')
      .map((m) => m.value as VmsRiskScore);
    expect(published.map((record) => [record.cycleId, record.lastIpAddress])).toEqual([
      ['c1', '10.0.0.1'],
      ['c3', '10.9.9.9'],
    ]);
    expect(summaries().map((summary) => summary.published.changed)).toEqual([1, 0, 1]);
  });

  it('createPublishHandler should publish a device again when its score stays and a signal goes missing', async () => {
    const { handler, begin } = build();
    const device = (missing: SignalName[]) => scoredDevice('m', 10, 'Trustworthy', { missing });
    await begin(1);
    await handler(scoreBatch(1, 0, [device([])], 1));
    await begin(2);
    await handler(scoreBatch(2, 0, [device(['inactivity', 'criticalCves'])], 1));
    await begin(3);
    await handler(scoreBatch(3, 0, [device(['inactivity', 'criticalCves'])], 1));
    const published = records()
      .filter((m) => m.key === 't1/m')
      .map((m) => m.value as VmsRiskScore);
    expect(published.map((record) => [record.cycleId, record.missing])).toEqual([
      ['c1', []],
      ['c2', ['inactivity', 'criticalCves']],
    ]);
    expect(summaries().map((summary) => summary.published.changed)).toEqual([1, 1, 0]);
  });

  it('createPublishHandler should publish a device again when only why its signal is missing changes, the reasons on its record', async () => {
    const { handler, begin } = build();
    const device = (missingReasons?: ScoredDevice['missingReasons']) =>
      scoredDevice('m', 10, 'Trustworthy', {
        missing: missingReasons ? (Object.keys(missingReasons) as SignalName[]) : [],
        ...(missingReasons ? { missingReasons } : {}),
      });
    await begin(1);
    await handler(scoreBatch(1, 0, [device({ criticalCves: 'FETCH_FAILED' })], 1));
    await begin(2);
    await handler(scoreBatch(2, 0, [device({ criticalCves: 'FETCH_FAILED' })], 1));
    await begin(3);
    await handler(scoreBatch(3, 0, [device({ criticalCves: 'NOT_IN_EXPORT_SNAPSHOT' })], 1));
    await begin(4);
    await handler(scoreBatch(4, 0, [device()], 1));
    const published = records().filter((m) => m.key === 't1/m');
    const values = published.map((m) => validateMessage('urs/vms-risk-score', m.value));
    expect(values.map((record) => [record.cycleId, record.missingReasons])).toEqual([
      ['c1', { criticalCves: 'FETCH_FAILED' }],
      ['c3', { criticalCves: 'NOT_IN_EXPORT_SNAPSHOT' }],
      ['c4', undefined],
    ]);
    // The bytes VMS reads carry them as the scored batch brought them.
    expect(published.map((m) => (m.json ? JSON.parse(m.json.toString()) : m.value))).toEqual(values);
    expect(summaries().map((summary) => summary.published.changed)).toEqual([1, 0, 1, 1]);
  });

  it("createCycleCompletion should hold a summary's lock while it is sent, so another replica's sweep sends it once", async () => {
    const hold = holdOnce();
    hold.arm();
    const slow = build({ summaryLockMs: 300, beforeSummarySent: hold.point });
    const other = build({ summaryLockMs: 300 });
    await slow.begin(1);
    const sending = slow.handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')], 1));
    await hold.reached;
    // The tenant's lease gone (lapsed in a pause), only the summary lock keeps the other replica's sweep off;
    // the send lasts over three lock lengths, the lock renewed meanwhile, not left to lapse.
    await redis.client.del(`${redis.prefix}publish-lease:t1`);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    // Long after the claim by the other replica's clock: the summary counts as owed, but its lock holds.
    now = new Date(minute(20));
    expect(await other.completion.closeOverdue()).toBe(0);
    hold.release();
    await sending;
    expect(summaries()).toHaveLength(1);
  });

  it("createCycleCompletion should send no summary from a sender whose lock lapsed during its snapshot and was taken by another replica's sweep", async () => {
    const hold = holdOnce();
    // Stops at its snapshot's first send (the snapshot reads the stored scores first).
    const stalled = build({ snapshotEveryCycles: 1, onScoresRead: hold.arm, afterScoresSent: hold.point });
    const other = build({ snapshotEveryCycles: 1 });
    await other.rebuild.ensure();
    now = new Date(minute(13));
    await stalled.begin(1);
    const sending = stalled.handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')], 1));
    await hold.reached;
    // The sender stalls past its summary lock and its tenant lease (a long pause, Redis out of reach): both
    // lapse, and the other replica's sweep takes them and sends the snapshot and the summary.
    await redis.client.del(`${redis.prefix}summary-lock:t1:c1`, `${redis.prefix}publish-lease:t1`);
    now = new Date(minute(20));
    expect(await other.completion.closeOverdue()).toBe(1);
    expect(summaries()).toHaveLength(1);
    hold.release();
    await sending;
    expect(summaries()).toHaveLength(1);
    expect(await owed()).toEqual([]);
  });

  it("createCycleCompletion should stop a send whose lock another sender holds, and neither extend nor give back the other's lock", async () => {
    const hold = holdOnce();
    const stalled = build({
      snapshotEveryCycles: 1,
      onScoresRead: hold.arm,
      afterScoresSent: hold.point,
      failSummaries: 1,
    });
    await stalled.rebuild.ensure();
    now = new Date(minute(13));
    await stalled.begin(1);
    const sending = stalled.handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')], 1));
    await hold.reached;
    // Its lock lapsed while it stalled, and another sender took it (and is sending still).
    const lockKey = `${redis.prefix}summary-lock:t1:c1`;
    await redis.client.set(lockKey, 'another sender', 'PX', 60_000);
    hold.release();
    await sending;
    // Neither a summary, nor a failed send giving the other's lock back; the other's lock is as it was.
    expect(summaries()).toHaveLength(0);
    expect(await redis.client.get(lockKey)).toBe('another sender');
    expect(await redis.client.pttl(lockKey)).toBeGreaterThan(30_000);
    expect(await owed()).toEqual([{ tenantId: 't1', cycleId: 'c1', status: 'complete' }]);
  });

  it('createCycleCompletion should send a summary claimed by a batch whose lock then failed, at a sweep, once', async () => {
    const { handler, begin, completion, rebuild } = build({ failLocks: 1 });
    // Rebuilt at start (the publisher's watch): the sweep sends a complete summary only once it is.
    await rebuild.ensure();
    now = new Date(minute(13));
    await begin(1);
    // Claimed, then Redis failed: the batch is not handled again (dead-lettered, or its publisher died).
    await expect(handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')], 1))).rejects.toThrow(
      'Connection is closed.',
    );
    expect(await completion.closeOverdue()).toBe(0);
    now = new Date(minute(14));
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]).toMatchObject({ status: 'complete', devices: { scored: 1 } });
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries()).toHaveLength(1);
  });

  it('closeOverdue should send a partial summary it claimed and could not lock, at a later sweep', async () => {
    const { handler, begin, completion, metrics } = build({ failLocks: 1 });
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    now = new Date(minute(16));
    expect(await completion.closeOverdue()).toBe(0);
    expect(metrics.expose()).toContain('urs_summary_sweep_failures_total 1');
    now = new Date(minute(17));
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]).toMatchObject({ status: 'partial', devices: { scored: 1 } });
  });

  it('closeOverdue should drop an owed summary that was sent, and never send it again once its sent marker expires', async () => {
    const { handler, begin, completion } = build({ failAfterSentMarker: 1 });
    await begin(1);
    // Sent, its marker written, and still listed as owed: Redis failed (or the publisher died) right after.
    await expect(handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')], 1))).rejects.toThrow(
      'Connection is closed.',
    );
    expect(summaries()).toHaveLength(1);
    now = new Date(minute(20));
    expect(await completion.closeOverdue()).toBe(0);
    expect(await owed()).toEqual([]);
    // Two days on, the marker has expired: the cycle's summary is not sent a second time.
    await redis.client.del(sentMarker('t1', 'c1'));
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries()).toHaveLength(1);
  });

  it('closeOverdue should drop, not send, an owed summary whose cycle has expired, and say which', async () => {
    const lines: LogLine[] = [];
    const { handler, begin, completion } = build({
      failSummaries: 1,
      completionLogger: capturingLogger(lines),
    });
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    now = new Date(minute(16));
    expect(await completion.closeOverdue()).toBe(0);
    expect(await owed()).toEqual([{ tenantId: 't1', cycleId: 'c1', status: 'partial' }]);
    // Its keys expire a day after its deadline: what it started at and what it scored are gone.
    await redis.client.del(`${redis.prefix}cycle:t1:c1`, `${redis.prefix}cycle-batches:t1:c1`);
    now = new Date(minute(17));
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries()).toEqual([]);
    expect(await owed()).toEqual([]);
    expect(lines).toContainEqual(expect.objectContaining({ level: 'warn', tenantId: 't1', cycleId: 'c1' }));
  });

  it('closeOverdue should drop, not send, an overdue cycle whose keys expired before any sweep, and say which', async () => {
    const lines: LogLine[] = [];
    const { handler, begin, completion } = build({ completionLogger: capturingLogger(lines) });
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    // No publisher swept for a day past its deadline: its keys expired, it is still listed as open.
    await redis.client.del(`${redis.prefix}cycle:t1:c1`, `${redis.prefix}cycle-batches:t1:c1`);
    now = new Date(minute(16));
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries()).toEqual([]);
    expect(await owed()).toEqual([]);
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries()).toEqual([]);
    expect(lines).toContainEqual(expect.objectContaining({ level: 'warn', tenantId: 't1', cycleId: 'c1' }));
  });

  it.each(['owed', 'overdue'] as const)(
    "closeOverdue should send an %s summary after the tenant's batch in progress, so its tombstones never take a device the batch publishes",
    async (left) => {
      const hold = holdOnce();
      const { handler, begin, completion, cycles } = build({
        tombstoneAfterCycles: 1,
        afterScoresSent: hold.point,
      });
      await begin(1);
      await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('x', 30, 'Low Risk')], 1));
      // Cycle 2, without x, is recorded whole; its summary is left to the sweep: claimed by a publisher
      // that died (owed), or never claimed (overdue).
      await begin(2);
      await handler(scoreBatch(2, 0, [device('a', 10, 'Trustworthy')]));
      await cycles.listed('t1', 'c2', { totalBatches: 1, totalDevices: 1, listedAt: minute(21) });
      if (left === 'owed') await cycles.claimPublication('t1', 'c2', 'complete', Date.parse(minute(21)));
      // Cycle 3's batch has published x's record and not yet recorded x as seen when the sweep comes.
      await begin(3);
      hold.arm();
      const batch = handler(scoreBatch(3, 0, [device('x', 40, 'Low Risk')]));
      await hold.reached;
      now = new Date(minute(31));
      const sweep = completion.closeOverdue();
      await new Promise((resolve) => setTimeout(resolve, 100));
      hold.release();
      await batch;
      expect(await sweep).toBe(1);
      expect(summaries().map((summary) => [summary.cycleId, summary.published.tombstones])).toEqual([
        ['c1', 0],
        ['c2', 0],
      ]);
      expect(
        records()
          .filter((m) => m.key === 't1/x')
          .map((m) => (m.value as VmsRiskScore | null)?.cycleId ?? null),
      ).toEqual(['c1', 'c3']);
    },
  );

  it.each(['owed', 'overdue'] as const)(
    "closeOverdue on another replica should leave an %s summary to a later sweep while the tenant's batch is in progress, so its tombstones never take a device the batch publishes",
    async (left) => {
      const hold = holdOnce();
      // The replica that consumes t1's partition, and another one whose sweep runs at the same time.
      const consumer = build({ tombstoneAfterCycles: 1, afterScoresSent: hold.point });
      const other = build({ tombstoneAfterCycles: 1 });
      await consumer.begin(1);
      await consumer.handler(
        scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('x', 30, 'Low Risk')], 1),
      );
      await consumer.begin(2);
      await consumer.handler(scoreBatch(2, 0, [device('a', 10, 'Trustworthy')]));
      await consumer.cycles.listed('t1', 'c2', { totalBatches: 1, totalDevices: 1, listedAt: minute(21) });
      if (left === 'owed')
        await consumer.cycles.claimPublication('t1', 'c2', 'complete', Date.parse(minute(21)));
      await consumer.begin(3);
      hold.arm();
      const batch = consumer.handler(scoreBatch(3, 0, [device('x', 40, 'Low Risk')]));
      await hold.reached;
      now = new Date(minute(31));
      const during = await other.completion.closeOverdue();
      hold.release();
      await batch;
      const after = await other.completion.closeOverdue();
      expect(
        records()
          .filter((m) => m.key === 't1/x')
          .map((m) => (m.value as VmsRiskScore | null)?.cycleId ?? null),
      ).toEqual(['c1', 'c3']);
      expect(summaries().map((summary) => [summary.cycleId, summary.published.tombstones])).toEqual([
        ['c1', 0],
        ['c2', 0],
      ]);
      expect([during, after]).toEqual([0, 1]);
    },
  );

  it("createPublishHandler should wait for another replica's sweep sending the tenant's summary, and publish after it", async () => {
    const consumer = build();
    const other = build({ summaryDelayMs: 500 });
    await consumer.begin(1);
    await consumer.handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    now = new Date(minute(16));
    const sweep = other.completion.closeOverdue();
    await waitFor(async () => (await redis.client.exists(`${redis.prefix}publish-lease:t1`)) === 1, {
      timeoutMs: 5_000,
    });
    await consumer.begin(2);
    await consumer.handler(scoreBatch(2, 0, [device('a', 40, 'Low Risk')]));
    expect(await sweep).toBe(1);
    expect(sent.map((m) => (m.topic === topics.vmsRiskSummary ? 'summary' : m.key))).toEqual([
      't1/a',
      'summary',
      't1/a',
    ]);
  });

  it('closeOverdue on another replica should not close as partial an overdue cycle whose last batch is in progress', async () => {
    const hold = holdOnce();
    const consumer = build({ afterScoresSent: hold.point });
    const other = build();
    await consumer.begin(1);
    await consumer.cycles.listed('t1', 'c1', { totalBatches: 2, totalDevices: 3, listedAt: minute(11) });
    await consumer.handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 30, 'Low Risk')]));
    // Past the deadline (minute 15), the last batch has published its device and not yet recorded it.
    now = new Date(minute(16));
    hold.arm();
    const batch = consumer.handler(scoreBatch(1, 1, [device('c', 50, 'Moderate Risk')], 2));
    await hold.reached;
    const during = await other.completion.closeOverdue();
    hold.release();
    await batch;
    expect(await other.completion.closeOverdue()).toBe(0);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]).toMatchObject({ status: 'complete', devices: { total: 3, scored: 3, failed: 0 } });
    expect(during).toBe(0);
  });

  it("closeOverdue should send another tenant's summary while a tenant's batch holds its queue, and the tenant's once its turn comes", async () => {
    const hold = holdOnce();
    // The sweep waits for t1's turn for longer than the test holds t1's queue.
    const { handler, begin, completion, cycles } = build({
      afterScoresSent: hold.point,
      sweepQueueWaitMs: 60_000,
    });
    // t1's cycle 2 is overdue first (deadline minute 25); t2's cycle, overdue after it (minute 26).
    await begin(2);
    await handler(scoreBatch(2, 0, [device('a', 10, 'Trustworthy')]));
    await cycles.begin({ tenantId: 't2', cycleId: 'c1', startedAt: minute(20), deadlineAt: minute(26) });
    await handler({ ...scoreBatch(1, 0, [device('b', 10, 'Trustworthy')]), tenantId: 't2' });
    // A batch of t1's next cycle holds t1's queue while the sweep runs.
    await begin(3);
    hold.arm();
    const batch = handler(scoreBatch(3, 0, [device('a', 10, 'Trustworthy')]));
    await hold.reached;
    now = new Date(minute(31));
    const sweep = completion.closeOverdue();
    try {
      await waitFor(() => summaries().some((summary) => summary.tenantId === 't2'), { timeoutMs: 5_000 });
      expect(summaries().map((summary) => summary.tenantId)).toEqual(['t2']);
    } finally {
      hold.release();
      await batch;
    }
    expect(await sweep).toBe(2);
    expect(
      summaries()
        .map((summary) => `${summary.tenantId}/${summary.cycleId}`)
        .sort(),
    ).toEqual(['t1/c2', 't2/c1']);
  });

  it("closeOverdue should leave a tenant whose queue stays held to a later sweep, other tenants' summaries going out at each sweep", async () => {
    const hold = holdOnce();
    const lines: LogLine[] = [];
    const { handler, begin, completion, cycles } = build({
      afterScoresSent: hold.point,
      sweepQueueWaitMs: 20,
      completionLogger: capturingLogger(lines),
    });
    // t1's cycle 2 is overdue from minute 25.
    await begin(2);
    await handler(scoreBatch(2, 0, [device('a', 10, 'Trustworthy')]));
    // A batch of t1's next cycle holds t1's queue for longer than several sweeps (as one completing its
    // cycle, or the tenant's deletion, waits for the published devices' rebuild after Redis lost them).
    await begin(3);
    hold.arm();
    const batch = handler(scoreBatch(3, 0, [device('a', 10, 'Trustworthy')]));
    await hold.reached;
    const closedBySweep: number[] = [];
    let sweep: Promise<number> = Promise.resolve(0);
    try {
      for (const n of [1, 2, 3]) {
        // Another of t2's cycles is past its deadline at each sweep.
        await cycles.begin({
          tenantId: 't2',
          cycleId: `c${n}`,
          startedAt: minute(20 + n),
          deadlineAt: minute(26 + n),
        });
        await handler({
          ...scoreBatch(1, 0, [device('b', 10, 'Trustworthy')]),
          tenantId: 't2',
          cycleId: `c${n}`,
          cycleStartedAt: minute(20 + n),
        });
        now = new Date(minute(30 + n));
        let closed: number | undefined;
        sweep = completion.closeOverdue();
        void sweep.then((count) => (closed = count));
        // The sweep ends with t1's queue still held: the next one starts.
        await waitFor(() => closed !== undefined, { timeoutMs: 5_000 });
        closedBySweep.push(closed as number);
      }
    } finally {
      hold.release();
      await batch;
      await sweep;
    }
    expect(closedBySweep).toEqual([1, 1, 1]);
    // Each sweep waited for t1's turn, gave up and went on.
    expect(
      lines.filter((line) => line.message === "tenant's queue busy, its summaries left to the next sweep"),
    ).toEqual(
      [1, 2, 3].map(() => expect.objectContaining({ level: 'debug', tenantId: 't1', cycleId: 'c2' })),
    );
    expect(summaries().map((summary) => `${summary.tenantId}/${summary.cycleId}`)).toEqual([
      't2/c1',
      't2/c2',
      't2/c3',
    ]);
    // Left out, not forgotten: the first sweep after its queue is free sends t1's summary.
    now = new Date(minute(34));
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries().map((summary) => `${summary.tenantId}/${summary.cycleId}`)).toEqual([
      't2/c1',
      't2/c2',
      't2/c3',
      't1/c2',
    ]);
  });

  it("closeOverdue should send every other tenant's summary when one cannot be sent", async () => {
    const { handler, completion, cycles } = build({ failSummaries: 1 });
    for (const tenantId of ['t1', 't2']) {
      await cycles.begin({ tenantId, cycleId: 'c1', startedAt: minute(10), deadlineAt: minute(15) });
      await handler({ ...scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]), tenantId });
    }
    now = new Date(minute(16));
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries()).toHaveLength(1);
    now = new Date(minute(17));
    expect(await completion.closeOverdue()).toBe(1);
    expect(
      summaries()
        .map((summary) => summary.tenantId)
        .sort(),
    ).toEqual(['t1', 't2']);
  });

  it('closeOverdue should close a cycle whose every batch was recorded as complete', async () => {
    const { begin, completion, cycles, rebuild } = build();
    // Rebuilt at start (the publisher's watch): the sweep sends a complete summary only once it is.
    await rebuild.ensure();
    await begin(1);
    // The publisher stopped after recording the last batch, before claiming the summary.
    const last = scoreBatch(1, 0, [device('a', 10, 'Trustworthy')], 1);
    await cycles.listed('t1', 'c1', { totalBatches: 1, totalDevices: 1, listedAt: minute(11) });
    await cycles.recordBatch('t1', 'c1', 0, batchStats(last, 1));
    now = new Date(minute(16));
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries()[0]).toMatchObject({ status: 'complete', devices: { total: 1, scored: 1 } });
  });

  it('closeOverdue should not count a band below zero when a correction moves a device never counted', async () => {
    const { handler, begin, completion } = build();
    await begin(1);
    await handler(scoreBatch(1, 1, [device('b', 10, 'Trustworthy')]));
    // Batch 0 (device y, Suspicious) was dead-lettered; its correction moves y to High Risk.
    await handler({
      ...scoreBatch(1, 2, [device('y', 90, 'High Risk')]),
      replaces: { bands: { Suspicious: 1 }, incomplete: 1 },
    });
    now = new Date(minute(16));
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries()[0]).toMatchObject({
      status: 'partial',
      devices: { scored: 1, incomplete: 0 },
      bands: { Trustworthy: 1, Suspicious: 0, 'High Risk': 1 },
    });
  });

  it("closeOverdue should count a cycle never listed against the tenant's last listed device count, the devices not scored as failed", async () => {
    const { handler, begin, completion } = build();
    // The tenant's last listed cycle had 3 devices; this one's poller died after its first batch.
    await tenantStore().updateStatus('t1', { deviceCount: 3 });
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 90, 'High Risk')]));
    now = new Date(minute(16));
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries()[0]).toMatchObject({ status: 'partial', devices: { total: 3, scored: 2, failed: 1 } });
  });

  it('closeOverdue should close a cycle its poller abandoned at the next sweep, before the cycle that retries it', async () => {
    const { handler, begin, completion, cycles } = build();
    await tenantStore().updateStatus('t1', { deviceCount: 3 });
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 90, 'High Risk')]));
    // The listing failed after that batch; the poller tries again with a new cycle minutes later.
    now = new Date(minute(11));
    const abandonment = { batches: 1, devices: 2, code: 'DEFENDER_UNAVAILABLE', at: minute(11) };
    await cycles.abandon('t1', 'c1', abandonment, Date.parse(minute(12)));
    expect(await completion.closeOverdue()).toBe(1);
    await begin(2);
    await handler(
      scoreBatch(
        2,
        0,
        [device('a', 10, 'Trustworthy'), device('b', 90, 'High Risk'), device('c', 50, 'Moderate Risk')],
        1,
      ),
    );
    now = new Date(minute(26));
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries().map((s) => [s.cycleId, s.status, s.devices])).toEqual([
      ['c1', 'partial', { total: 3, scored: 2, incomplete: 0, failed: 1 }],
      ['c2', 'complete', { total: 3, scored: 3, incomplete: 0, failed: 0 }],
    ]);
  });

  it('createPublishHandler should close an abandoned cycle as partial when its last emitted batch is in', async () => {
    const { handler, begin, completion, cycles } = build();
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    now = new Date(minute(11));
    const abandonment = { batches: 2, devices: 3, code: 'CYCLE_ABORTED', at: minute(11) };
    await cycles.abandon('t1', 'c1', abandonment, Date.parse(minute(12)));
    // Batch 1 is still on its way: the sweep leaves the cycle to it until the grace ends.
    expect(await completion.closeOverdue()).toBe(0);
    await handler(scoreBatch(1, 1, [device('b', 90, 'High Risk')]));
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]).toMatchObject({ status: 'partial', devices: { total: 3, scored: 2, failed: 1 } });
  });

  it('closeOverdue should send no summary for a cycle its poller withdrew, and a batch of it scored after all should settle it', async () => {
    const { handler, begin, completion, cycles } = build();
    await tenantStore().updateStatus('t1', { deviceCount: 3 });
    // Its first batch never sent (Kafka away): withdrawn, nothing owed, at no sweep.
    await begin(1);
    now = new Date(minute(11));
    const stopped = { batches: 0, devices: 3, code: 'KAFKA_UNAVAILABLE', at: minute(11) };
    expect(await cycles.withdraw('t1', 'c1', stopped)).toBe(true);
    now = new Date(minute(30));
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries()).toEqual([]);
    // A first batch whose send failed only in its answer: scored after all, the cycle closes as abandoned.
    await begin(2);
    now = new Date(minute(21));
    expect(await cycles.withdraw('t1', 'c2', { ...stopped, at: minute(21) })).toBe(true);
    await handler(scoreBatch(2, 0, [device('a', 10, 'Trustworthy')]));
    // Its only batch, the last one: complete.
    await begin(3);
    now = new Date(minute(31));
    expect(await cycles.withdraw('t1', 'c3', { ...stopped, at: minute(31) })).toBe(true);
    await handler(
      scoreBatch(
        3,
        0,
        [device('a', 10, 'Trustworthy'), device('b', 90, 'High Risk'), device('c', 50, 'Moderate Risk')],
        1,
      ),
    );
    expect(summaries().map((s) => [s.cycleId, s.status, s.devices])).toEqual([
      ['c2', 'partial', { total: 3, scored: 1, incomplete: 0, failed: 2 }],
      ['c3', 'complete', { total: 3, scored: 3, incomplete: 0, failed: 0 }],
    ]);
  });

  it('createPublishHandler should leave a cycle whose poller died, its emitted batches not known, to the close it was given', async () => {
    const { handler, begin, completion, cycles } = build();
    await tenantStore().updateStatus('t1', { deviceCount: 3 });
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    // The poller that took the tenant over records it: how far the dead one got is not known.
    now = new Date(minute(11));
    await cycles.abandon('t1', 'c1', { code: 'POLLER_GONE', at: minute(11) }, Date.parse(minute(12)));
    await handler(scoreBatch(1, 1, [device('b', 90, 'High Risk')]));
    expect(await completion.closeOverdue()).toBe(0);
    expect(summaries()).toEqual([]);
    now = new Date(minute(12));
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries()[0]).toMatchObject({ status: 'partial', devices: { total: 3, scored: 2, failed: 1 } });
  });

  it('createPublishHandler should close a cycle as partial once its batches are all scored or lost, the lost devices failed, without waiting for its deadline', async () => {
    const lines: LogLine[] = [];
    const { handler, begin, cycles } = build({ completionLogger: capturingLogger(lines) });
    await begin(1);
    await cycles.listed('t1', 'c1', { totalBatches: 3, totalDevices: 3, listedAt: minute(11) });
    now = new Date(minute(11));
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    // Batch 1 dead-lettered on the way: it will never be scored.
    await cycles.lost('t1', 'c1', 1, 1, now.getTime());
    await handler(scoreBatch(1, 2, [device('c', 90, 'High Risk')], 3));
    expect(summaries().map((s) => [s.cycleId, s.status, s.devices])).toEqual([
      ['c1', 'partial', { total: 3, scored: 2, incomplete: 0, failed: 1 }],
    ]);
    expect(lines.filter((line) => line.message === 'cycle published')).toEqual([
      expect.objectContaining({
        cycleId: 'c1',
        status: 'partial',
        reason: 'batches lost (dead-lettered, or the tenant disabled): 1',
      }),
    ]);
    // Batch 1 redelivered and scored after all: its device goes to VMS, the published cycle is left alone.
    await handler(scoreBatch(1, 1, [device('b', 30, 'Low Risk')]));
    expect(records('c1').map((m) => m.key)).toContain('t1/b');
    expect(summaries()).toHaveLength(1);
  });

  it('closeOverdue should close at the next sweep, before its deadline, a cycle whose last unsettled batch was lost', async () => {
    const { handler, begin, cycles, completion } = build();
    await begin(1);
    await cycles.listed('t1', 'c1', { totalBatches: 3, totalDevices: 3, listedAt: minute(11) });
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    await handler(scoreBatch(1, 2, [device('c', 90, 'High Risk')], 3));
    now = new Date(minute(12));
    expect(await completion.closeOverdue()).toBe(0);
    await cycles.lost('t1', 'c1', 1, 1, now.getTime());
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries().map((s) => [s.cycleId, s.status, s.devices])).toEqual([
      ['c1', 'partial', { total: 3, scored: 2, incomplete: 0, failed: 1 }],
    ]);
  });

  it('createPublishHandler should complete a cycle whose lost batch was scored after all, counting it once', async () => {
    const { handler, begin, cycles } = build();
    await begin(1);
    await cycles.lost('t1', 'c1', 1, 1, Date.parse(minute(11)));
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    await handler(scoreBatch(1, 1, [device('b', 30, 'Low Risk')]));
    await handler(scoreBatch(1, 2, [device('c', 90, 'High Risk')], 3));
    expect(summaries().map((s) => [s.cycleId, s.status, s.devices])).toEqual([
      ['c1', 'complete', { total: 3, scored: 3, incomplete: 0, failed: 0 }],
    ]);
  });

  it('closeOverdue should count a lost batch of an abandoned cycle whose devices are not known otherwise as failed', async () => {
    const { handler, begin, cycles, completion } = build();
    await begin(1);
    await handler(scoreBatch(1, 0, [device('a', 10, 'Trustworthy')]));
    await cycles.lost('t1', 'c1', 1, 2, Date.parse(minute(11)));
    now = new Date(minute(11));
    // The listing stopped after two batches, its device count not known.
    await cycles.abandon(
      't1',
      'c1',
      { batches: 2, code: 'CYCLE_ABORTED', at: minute(11) },
      Date.parse(minute(14)),
    );
    expect(await completion.closeOverdue()).toBe(1);
    expect(summaries().map((s) => [s.cycleId, s.status, s.devices])).toEqual([
      ['c1', 'partial', { total: 3, scored: 1, incomplete: 0, failed: 2 }],
    ]);
  });

  it('createCycleCompletion should count the tombstones a cycle sent in its summary sent again after a failure', async () => {
    const { handler, begin } = build({ tombstoneAfterCycles: 1, failSummaries: 1 });
    // Device gone was last seen in a cycle before c1: c1's completion tombstones it.
    await createPublishedStore(redis.client, redis.prefix).commit('t1', Date.parse(minute(0)), [
      { deviceId: 'gone', score: 10, band: 'Trustworthy' },
    ]);
    await begin(1);
    const last = scoreBatch(1, 0, [device('a', 10, 'Trustworthy')], 1);
    await expect(handler(last)).rejects.toThrow('the broker is unavailable');
    expect(
      records()
        .filter((m) => m.value === null)
        .map((m) => m.key),
    ).toEqual(['t1/gone']);
    // The redelivery sends the summary the first delivery owed: the tombstone went out with that cycle.
    await handler(last);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]?.published).toEqual({ changed: 1, snapshot: false, tombstones: 1 });
  });

  it("createPublishHandler should count a batch's records in its cycle's summary when it was stopped after sending them", async () => {
    const { handler, begin } = build({ failRecords: 1 });
    await begin(1);
    const last = scoreBatch(1, 0, [device('a', 10, 'Trustworthy'), device('b', 90, 'High Risk')], 1);
    await expect(handler(last)).rejects.toThrow('the process was killed');
    expect(records()).toHaveLength(2);
    // The redelivery finds the devices still to publish (sending them again is harmless): counted once, as sent.
    await handler(last);
    expect(summaries()).toHaveLength(1);
    expect(summaries()[0]?.published).toMatchObject({ changed: 2 });
  });
});

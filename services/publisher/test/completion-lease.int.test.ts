import type { Publisher } from '@urs/bus';
import type { ScoreBatch, TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import {
  createCycleStore,
  createPublishedStore,
  createScoreStore,
  createTenantStore,
  type PublishedStore,
} from '@urs/store';
import { Registry } from '@urs/telemetry';
import { createTestRedis, inboundMessage, scoredDevice, type TestRedis } from '@urs/testkit';
import { createCycleCompletion } from '../src/completion';
import { createPublishHandler } from '../src/handler';
import { createInOrder } from '../src/in-order';
import { tenantLeasing } from '../src/lease';
import { createPublishedRebuilder } from '../src/rebuild';
import { createTenantsHandler } from '../src/tenants';
import { createTombstones } from '../src/tombstones';

const topics = { vmsRiskScores: 'vms.risk-scores', vmsRiskSummary: 'vms.risk-summary' };

// Recent times: the cycle store expires a cycle a day after its deadline.
const startedAt = Math.floor(Date.now() / 60_000) * 60_000 - 10 * 60_000;
const at = (minutes: number): string => new Date(startedAt + minutes * 60_000).toISOString();

/** A replica's rebuild of what VMS holds, from a `vms.risk-scores` without records. */
const emptyTopicRebuild = (published: PublishedStore) =>
  createPublishedRebuilder({ published, readKeys: async () => 0, logger: silentLogger });

/**
 * Two replicas of the publisher on one Redis: the one that consumes the tenant's scores completes its cycle
 * while the other one handles the tenant's deletion (its record on `urs.tenants` went to that replica).
 */
describe('the cycle completion and a deletion on another replica', () => {
  let redis: TestRedis;

  beforeEach(() => {
    redis = createTestRedis();
  });
  afterEach(async () => {
    await redis.close();
  });

  it.each([
    // The batch recorded (its lease given back), its completion not begun: no summary of a deleted tenant.
    ['its batch is recorded', ['t1/a', 't1/b', 't1/a gone', 't1/b gone']],
    // The completion has read the devices' scores for its snapshot: the deletion waits for it.
    ['its snapshot is read', ['t1/a', 't1/b', 't1/a', 't1/b', 'summary', 't1/a gone', 't1/b gone']],
  ] as const)(
    "createCycleCompletion should never send a cycle's snapshot or summary after the tenant's deletion tombstones its devices, when the deletion comes once %s",
    async (when, expected) => {
      const sent: { topic: string; key: string; deleted: boolean }[] = [];
      const publisher: Publisher = {
        send: async (topic, _contract, messages) => {
          for (const m of messages) sent.push({ topic, key: m.key, deleted: m.value === null });
        },
        sendRaw: async () => undefined,
        close: async () => undefined,
      };
      const metrics = new Registry({ processMetrics: false });
      const cycles = createCycleStore(redis.client, redis.prefix);
      const published = createPublishedStore(redis.client, redis.prefix);
      const scores = createScoreStore(redis.client, redis.prefix);

      // The other replica handles the deletion; `refused` resolves once it finds the tenant's lease held.
      let refuse!: () => void;
      const refused = new Promise<void>((resolve) => (refuse = resolve));
      const tenants = createTenantsHandler({
        published: {
          ...published,
          takeTenantLease: async (lease) => {
            const taken = await published.takeTenantLease(lease);
            if (!taken) refuse();
            return taken;
          },
        },
        tenants: createTenantStore(redis.client, redis.prefix),
        tombstones: createTombstones({ published, scores, publisher, topic: topics.vmsRiskScores, metrics }),
        scores,
        inOrder: createInOrder(),
        leasing: tenantLeasing(),
        rebuild: emptyTopicRebuild(published),
        logger: silentLogger,
      });
      // Sent once, at the chosen point; the consuming replica goes on once the deletion is done, or once it
      // waits for the tenant's lease.
      let deletion: Promise<void> | undefined;
      const deleteAt = async (point: typeof when): Promise<void> => {
        if (point !== when || deletion !== undefined) return;
        deletion = tenants(
          inboundMessage<TenantRecord>(null, {
            topic: 'urs.tenants',
            key: 't1',
            timestamp: Date.parse(at(3)),
          }),
        );
        await Promise.race([deletion, refused]);
      };

      // The replica that consumes the tenant's scores.
      const completion = createCycleCompletion({
        cycles,
        published,
        scores: {
          ...scores,
          getDeviceScores: async (...args) => {
            const read = await scores.getDeviceScores(...args);
            await deleteAt('its snapshot is read');
            return read;
          },
        },
        publisher,
        topics,
        logger: silentLogger,
        metrics,
        snapshotEveryCycles: 1,
        tombstoneAfterCycles: 3,
        inOrder: createInOrder(),
        leasing: tenantLeasing(),
        rebuild: emptyTopicRebuild(published),
        now: () => new Date(at(4)),
      });
      const handler = createPublishHandler({
        cycles: {
          recordBatch: async (...args) => {
            const recorded = await cycles.recordBatch(...args);
            await deleteAt('its batch is recorded');
            return recorded;
          },
        },
        published,
        completion,
        inOrder: createInOrder(),
        leasing: tenantLeasing(),
        publisher,
        topic: topics.vmsRiskScores,
        logger: silentLogger,
        metrics,
      });

      await cycles.begin({ tenantId: 't1', cycleId: 'c1', startedAt: at(0), deadlineAt: at(5) });
      const batch: ScoreBatch = {
        schemaVersion: 1,
        tenantId: 't1',
        cycleId: 'c1',
        cycleStartedAt: at(0),
        batchIndex: 0,
        lastBatch: true,
        totalBatches: 1,
        totalDevices: 2,
        collectedAt: at(1),
        scoredAt: at(2),
        devices: [scoredDevice('a', 10, 'Trustworthy'), scoredDevice('b', 80, 'High Risk')],
      };
      const { cycleId, cycleStartedAt, collectedAt, scoredAt } = batch;
      await scores.saveScores('t1', { cycleId, cycleStartedAt, collectedAt, scoredAt }, batch.devices);
      await handler(inboundMessage(batch, { topic: 'urs.device-scores', key: 't1' }));
      expect(deletion).toBeDefined();
      await deletion;

      // VMS holds nothing of the tenant: each device's last record is its tombstone, and a summary, if any,
      // is before them (after the deletion it would report a cycle of a tenant VMS no longer has).
      expect(
        sent.map((m) =>
          m.topic === topics.vmsRiskSummary ? 'summary' : `${m.key}${m.deleted ? ' gone' : ''}`,
        ),
      ).toEqual(expected);
      // And the publisher's state of the tenant is gone, not written again by the completion after it.
      const stateKeys = [
        'published',
        'published-seen',
        'published-cycles',
        'published-seq',
        'published-counter',
      ];
      expect(await redis.client.exists(...stateKeys.map((name) => `${redis.prefix}${name}:t1`))).toBe(0);
    },
  );
});

import type { Kafka } from 'kafkajs';
import { createPublisher, topicOffsets, type Publisher } from '@urs/bus';
import type { Machine, TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createSecretSealer } from '@urs/secrets';
import {
  createCycleStore,
  createPollScheduleStore,
  createTenantStore,
  type PollScheduleStore,
} from '@urs/store';
import { Registry } from '@urs/telemetry';
import {
  createTestKafka,
  createUniqueTopics,
  deleteTopics,
  inboundMessage,
  tenantRecord,
  testRedisPerTest,
  waitFor,
} from '@urs/testkit';
import { createBatchFit } from '../src/batch-fit';
import { runCycle, type CycleDeps } from '../src/cycle';
import type { DefenderGateway, DevicePage } from '../src/defender';
import { createScheduler, type Scheduler } from '../src/scheduler';
import { createTenantTable } from '../src/tenant-table';

// Two pollers over the real Redis and Kafka. The first one's lease renewals fail with errors while its listing
// and Kafka go on; once its lease has expired the second one takes the tenant over, records the first one's
// cycle as abandoned (`POLLER_GONE`) and lists the tenant again. Leases of 1.5 s, batches of 2 devices.

const LEASE_MS = 1_500;
const sealer = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', Buffer.alloc(32, 7)]]) });

function sealedRecord(tenantId: string): TenantRecord {
  const record = tenantRecord(tenantId, { pollIntervalMinutes: 10 });
  return { ...record, defender: { ...record.defender, clientSecret: sealer.seal('S3cr3t~x', tenantId) } };
}

function page(...ids: string[]): DevicePage {
  return { devices: ids.map((id) => ({ machine: { id } as Machine, merged: false })) };
}

/** A Defender whose listing is `list`, planned in bulk from the first device on: batches go out page by page. */
function defenderListing(list: (signal: AbortSignal) => AsyncIterable<DevicePage>): DefenderGateway {
  return {
    forTenant: () => ({ listDevicePages: list }),
    forget: () => undefined,
    close: () => undefined,
    planMode: () => ({ mode: 'bulk', perDeviceCapacity: 0 }),
  };
}

/** Resolves once `signal` is aborted. */
function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

describe('a tenant taken over from a poller whose lease renewals fail', () => {
  const redis = testRedisPerTest();
  let kafka: Kafka;
  let topic: string;
  let publisher: Publisher;
  const schedulers: Scheduler[] = [];

  beforeAll(async () => {
    kafka = createTestKafka();
    [topic] = (await createUniqueTopics(kafka, [{ prefix: 'device-batches' }])) as [string];
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    await Promise.all(schedulers.splice(0).map((scheduler) => scheduler.close(100)));
  });

  afterAll(async () => {
    await publisher.close();
    await deleteTopics(kafka, [topic]);
  });

  async function batchesOnTopic(): Promise<number> {
    const offsets = await topicOffsets(kafka, topic);
    return offsets.reduce((sum, o) => sum + Number(BigInt(o.high) - BigInt(o.low)), 0);
  }

  async function poller(holderId: string, schedules: PollScheduleStore, defender: DefenderGateway) {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const cycleDeps: CycleDeps = {
      defender,
      sealer,
      publisher,
      cycles,
      deviceBatchesTopic: topic,
      batchFit: createBatchFit(),
      batchSize: 2,
      maxCycleMs: 600_000,
      logger: silentLogger,
    };
    const table = createTenantTable();
    table.expectEnd(new Map());
    const record = sealedRecord('acme');
    const tenants = createTenantStore(redis.client, redis.prefix);
    // Stored in Redis as the registrar stores it: a cycle begins only for a tenant enabled there.
    await tenants.put(record);
    await table.handle(inboundMessage(record, { offset: '0', key: record.tenantId }));
    const scheduler = createScheduler({
      table,
      schedules,
      tenants,
      cycles,
      runCycle: (input) => runCycle(cycleDeps, input),
      holderId,
      intervalUnitMs: 60_000,
      leaseMs: LEASE_MS,
      maxConcurrentCycles: 1,
      tickMs: 20,
      recheckMs: 50,
      maxBackoffMs: 60_000,
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
    });
    schedulers.push(scheduler);
    scheduler.start();
    return { scheduler, cycles };
  }

  it('the poller taken over should send no batch and record no listing of its cycle after the takeover', async () => {
    const schedules = createPollScheduleStore(redis.client, redis.prefix);
    const failingRenewals: PollScheduleStore = {
      ...schedules,
      renew: async () => {
        throw new Error('Connection is closed.');
      },
    };
    let atGate = false;
    let openGate = (): void => undefined;
    const gate = new Promise<void>((resolve) => {
      openGate = resolve;
    });
    // The first page goes out as one batch, the rest waits until the tenant was taken over.
    const first = await poller(
      'alive',
      failingRenewals,
      defenderListing(async function* () {
        yield page('d1', 'd2', 'd3');
        atGate = true;
        await gate;
        yield page('d4', 'd5', 'd6');
      }),
    );
    await waitFor(() => atGate, { description: "the first poller's first batch" });
    expect(await batchesOnTopic()).toBe(1);
    const { runningCycleId: firstCycleId } = await schedules.get('acme');
    if (firstCycleId === undefined) throw new Error('the first poller began no cycle');

    let takenOver = false;
    await poller(
      'successor',
      schedules,
      defenderListing(async function* (signal) {
        takenOver = true;
        // Lists nothing before the test ends: the topic holds the first poller's batches only.
        await aborted(signal);
        yield page('d7');
      }),
    );
    await waitFor(() => takenOver, { timeoutMs: 20_000, description: 'the takeover' });
    expect((await first.cycles.get('acme', firstCycleId))?.abandoned).toMatchObject({ code: 'POLLER_GONE' });

    openGate();
    await waitFor(() => first.scheduler.running() === 0, { description: "the first poller's cycle to end" });
    // Its batch sent before the takeover only; recorded as its own abandonment, with that count, so that the
    // publisher closes the cycle as soon as that batch is scored.
    expect(await batchesOnTopic()).toBe(1);
    const state = await first.cycles.get('acme', firstCycleId);
    expect(state?.totalBatches).toBeUndefined();
    expect(state?.abandoned).toMatchObject({ code: 'CYCLE_ABORTED', batches: 1 });
  });
});

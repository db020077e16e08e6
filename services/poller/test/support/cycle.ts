import { KafkaJSProtocolError, type Kafka } from 'kafkajs';
import { BusError, createPublisher, readTopicUpTo, topicOffsets, type Publisher } from '@urs/bus';
import type { DeviceBatch, Machine, TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createSecretSealer } from '@urs/secrets';
import type { CycleStore } from '@urs/store';
import { createTestKafka, createUniqueTopics, deleteTopics, uniqueId, type TopicSpec } from '@urs/testkit';
import { createBatchFit, type BatchFit } from '../../src/batch-fit';
import { cycleIdOf, type CycleDeps, type CycleInput } from '../../src/cycle';
import type { DefenderGateway, DevicePage } from '../../src/defender';

/** The sealer a cycle opens the tenant's client secret with. */
export const sealer = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', Buffer.alloc(32, 3)]]) });

/** Tenant acme's record, its client secret sealed by `sealer`. */
export const sealedRecord = (riskProfile: Record<string, unknown> | null = null): TenantRecord => ({
  schemaVersion: 1,
  tenantId: 'acme',
  revision: 1,
  updatedAt: '2026-01-01T00:00:00.000Z',
  source: 'rest',
  enabled: true,
  defender: {
    azureTenantId: '11111111-2222-3333-4444-555555555555',
    clientId: '66666666-7777-8888-9999-000000000000',
    clientSecret: sealer.seal('Sup3r~secret', 'acme'),
    pollIntervalMinutes: 10,
    cloud: 'commercial',
    region: 'eu',
    riskProfile,
  },
});

/** What the publisher rejects a send with when the broker refuses its record as larger than the topic takes. */
export const recordTooLarge = (): Error =>
  new BusError(
    'RECORD_TOO_LARGE',
    'topic urs.device-batches refused a record as too large (MESSAGE_TOO_LARGE)',
    {
      canRetry: false,
      cause: new KafkaJSProtocolError(
        Object.assign(new Error('The request included a message larger than the max message size'), {
          type: 'MESSAGE_TOO_LARGE',
          code: 10,
          retriable: false,
        }),
      ),
    },
  );

/**
 * The batches' topic as a replica knows it once the topic took a record of `bytes` (1 MB unless told): the last
 * batches of its cycles up to that size keep their totals as pending (`BatchFit`).
 */
export function fitAfterTaking(bytes = 1_000_000): BatchFit {
  const fit = createBatchFit();
  fit.taken(bytes);
  return fit;
}

/**
 * The deps of cycles listing from `defender` (secrets opened by `sealer`) whose batches `to.publisher` sends to
 * `to.deviceBatchesTopic`, their records kept by `to.cycles`: batches of 500 under `batchFit`, `maxCycleMs` at
 * most (5 minutes unless told).
 */
export const cycleDepsSending = (
  defender: DefenderGateway,
  batchFit: BatchFit,
  to: Pick<CycleDeps, 'publisher' | 'cycles' | 'deviceBatchesTopic'>,
  maxCycleMs = 300_000,
): CycleDeps => ({
  defender,
  sealer,
  ...to,
  batchSize: 500,
  batchFit,
  maxCycleMs,
  logger: silentLogger,
});

/**
 * The deps of cycles listing from `defender` (secrets opened by `sealer`) whose batches and cycle records go
 * nowhere: batches of 500 under `batchFit`, an hour at most.
 */
export const unsentCycleDeps = (defender: DefenderGateway, batchFit: BatchFit): CycleDeps =>
  cycleDepsSending(
    defender,
    batchFit,
    {
      publisher: { send: async () => undefined } as unknown as Publisher,
      cycles: {
        begin: async () => undefined,
        mergedDevices: async () => undefined,
        listed: async () => undefined,
      } as unknown as CycleStore,
      deviceBatchesTopic: 'urs.device-batches',
    },
    3_600_000,
  );

/**
 * A cycle store that keeps nothing and refuses nothing: its cycles begin, keep their totals as pending, list,
 * are abandoned or withdrawn. `pending` and `listed`: the batch counts of the totals kept as pending and listed,
 * in order.
 */
export function countingCycles(): { cycles: CycleStore; pending: number[]; listed: number[] } {
  const pending: number[] = [];
  const listed: number[] = [];
  const cycles = {
    begin: async () => undefined,
    mergedDevices: async () => undefined,
    listingPending: async (_lease: unknown, _cycleId: string, totals: { totalBatches: number }) => {
      pending.push(totals.totalBatches);
      return true;
    },
    listed: async (_tenantId: string, _cycleId: string, totals: { totalBatches: number }) => {
      listed.push(totals.totalBatches);
    },
    dropPendingListing: async () => undefined,
    abandon: async () => true,
    withdraw: async () => true,
  } as unknown as CycleStore;
  return { cycles, pending, listed };
}

/** A device batches topic's limit on a record batch: a batch of 500 devices (~12 KB) is larger. */
export const SMALL_MAX_MESSAGE_BYTES = 8192;

/** For createUniqueTopics: a device batches topic taking records of at most SMALL_MAX_MESSAGE_BYTES. */
export const smallBatchesTopic = {
  prefix: 'device-batches',
  configEntries: [{ name: 'max.message.bytes', value: String(SMALL_MAX_MESSAGE_BYTES) }],
};

/**
 * For each test of the calling `describe`, over the test Kafka: fresh topics made from `specs` (one
 * `smallBatchesTopic` unless told), in their order, and a publisher, closed and deleted after the test.
 */
export function batchesTopicsPerTest(specs: TopicSpec[] = [smallBatchesTopic]) {
  let kafka: Kafka | undefined;
  let topics: string[] = [];
  let publisher: Publisher | undefined;
  beforeAll(() => {
    kafka = createTestKafka();
  });
  beforeEach(async () => {
    topics = await createUniqueTopics(kafka as Kafka, specs);
    publisher = await createPublisher(kafka as Kafka);
  });
  afterEach(async () => {
    await publisher?.close();
    publisher = undefined;
    await deleteTopics(kafka as Kafka, topics.splice(0));
  });
  const now = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('batchesTopicsPerTest: the topics exist only while a test runs');
    return value;
  };
  return {
    get kafka() {
      return now(kafka);
    },
    /** The topics, one a spec. */
    get topics() {
      return now(topics.length === 0 ? undefined : topics);
    },
    /** The first topic. */
    get topic() {
      return now(topics[0]);
    },
    get publisher() {
      return now(publisher);
    },
  };
}

/** `count` devices listed as not merged, their ids `device-<n>` (n from 0, padded to 5 digits when `padded`). */
export const listedDevices = (count: number, from = 0, padded = true): DevicePage['devices'] =>
  Array.from({ length: count }, (_, n) => ({
    machine: { id: `device-${padded ? String(from + n).padStart(5, '0') : from + n}` } as Machine,
    merged: false,
  }));

/** A gateway whose every tenant lists `pages`, planned as `plan` (per-device, room for 1,000, unless told). */
export const pagesGateway = (
  pages: () => AsyncIterable<DevicePage>,
  plan: ReturnType<DefenderGateway['planMode']> = { mode: 'per-device', perDeviceCapacity: 1_000 },
): DefenderGateway => ({
  forTenant: () => ({ listDevicePages: pages }),
  forget: () => undefined,
  close: () => undefined,
  planMode: () => plan,
});

/** The first cycle of tenant acme (`sealedRecord()`), its lease held throughout. */
export const acmeCycle = (): CycleInput => ({
  record: sealedRecord(),
  cycleId: cycleIdOf('acme', 0),
  startedAt: Date.now(),
  intervalMs: 600_000,
  lease: { tenantId: 'acme', token: '1:poller' },
  signal: new AbortController().signal,
  leaseHeld: () => true,
});

/** Every device batch on `topic` (one partition) up to its end now, in order. */
export async function readDeviceBatches(kafka: Kafka, topic: string): Promise<DeviceBatch[]> {
  const [partition] = await topicOffsets(kafka, topic);
  const batches: DeviceBatch[] = [];
  await readTopicUpTo(
    kafka,
    topic,
    new Map([[0, BigInt(partition?.high ?? '0') - 1n]]),
    uniqueId('read'),
    20_000,
    (messages) => {
      for (const message of messages) batches.push(JSON.parse(String(message.value)) as DeviceBatch);
    },
  );
  return batches;
}

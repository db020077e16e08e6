import type { InboundMessage, Publisher } from '@urs/bus';
import type { DeviceBatch, EnrichedBatch, TenantRecord, VulnerabilitySummary } from '@urs/contracts';
import { createHttpsAgent, createLocalLimiter, createLocalQuotaGate } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import type { SecretSealer } from '@urs/secrets';
import type {
  AnsweredCalls,
  BulkExportState,
  BulkVulnerabilityCache,
  CycleState,
  TenantStatus,
} from '@urs/store';
import { Registry } from '@urs/telemetry';
import { inboundMessage } from '@urs/testkit';
import { createEnrichHandler, type EnrichHandlerDeps } from '../src/handler';
import { createDefenderSources, type SourceProvider, type VulnerabilitySource } from '../src/sources';
import type { VulnerabilityLike } from '../src/summarise';

// The enrich handler's unit-test fixtures: a tenant t1, its batches, an export cache in memory, and the
// handler over a fake source whose sends and status writes are recorded.

export const record = { tenantId: 't1', revision: 1 } as unknown as TenantRecord;

export function batch(overrides: Partial<DeviceBatch> = {}): DeviceBatch {
  return {
    schemaVersion: 1,
    tenantId: 't1',
    cycleId: 'c1',
    cycleStartedAt: '2026-01-01T10:00:00.000Z',
    batchIndex: 0,
    lastBatch: true,
    totalBatches: 1,
    totalDevices: 3,
    vulnerabilityMode: 'per-device',
    cvssThreshold: 9,
    devices: [{ id: 'd1' }, { id: 'd2' }, { id: 'd3' }],
    ...overrides,
  };
}

export const message = (value: DeviceBatch): InboundMessage<DeviceBatch> =>
  inboundMessage(value, { topic: 'urs.device-batches', key: value.tenantId });

export function memoryBulkCache(renewals: string[] = []): BulkVulnerabilityCache {
  const data = new Map<string, Map<string, VulnerabilitySummary | null>>();
  const states = new Map<string, BulkExportState>();
  return {
    async claim(tenantId, cycleId, owner) {
      const key = `${tenantId}/${cycleId}`;
      if (states.has(key)) return false;
      states.set(key, { state: 'pending', owner });
      return true;
    },
    async save(tenantId, cycleId, summaries, collectedAt, generatedTime) {
      data.set(`${tenantId}/${cycleId}`, new Map(summaries));
      states.set(`${tenantId}/${cycleId}`, {
        state: 'ready',
        collectedAt,
        ...(generatedTime === undefined ? {} : { generatedTime }),
      });
    },
    async fail(tenantId, cycleId, error) {
      states.set(`${tenantId}/${cycleId}`, { state: 'failed', ...error });
    },
    async release(tenantId, cycleId, owner) {
      const state = states.get(`${tenantId}/${cycleId}`);
      if (state?.state === 'pending' && state.owner === owner) states.delete(`${tenantId}/${cycleId}`);
    },
    async renew(tenantId, cycleId, owner) {
      renewals.push(`${tenantId}/${cycleId}`);
      const state = states.get(`${tenantId}/${cycleId}`);
      return state?.state === 'pending' && state.owner === owner;
    },
    async state(tenantId, cycleId) {
      return states.get(`${tenantId}/${cycleId}`) ?? { state: 'absent' };
    },
    async read(tenantId, cycleId, ids) {
      const summaries = data.get(`${tenantId}/${cycleId}`);
      return summaries ? new Map(ids.map((id) => [id, summaries.get(id)])) : null;
    },
    // Reading the export last is tested against Redis (export-last.int.test.ts): here no export is kept.
    latest: async () => null,
    pinLatest: async () => null,
    keepLatest: async () => undefined,
    async *scan() {},
    async *compare() {},
  };
}

/**
 * A per-device batch's answered calls in memory, as `createAnsweredCalls` keeps them in Redis (tested against
 * Redis in answered-calls.int.test.ts), without their expiry.
 */
export function memoryAnswers(): AnsweredCalls {
  const batches = new Map<string, { summaries: Map<string, VulnerabilitySummary>; collectedAt: string }>();
  const key = (tenantId: string, cycleId: string, batchIndex: number): string =>
    `${tenantId}/${cycleId}/${batchIndex}`;
  return {
    async read(tenantId, cycleId, batchIndex) {
      const kept = batches.get(key(tenantId, cycleId, batchIndex));
      return kept ? { summaries: new Map(kept.summaries), collectedAt: kept.collectedAt } : null;
    },
    async keep(tenantId, cycleId, batchIndex, calls) {
      for (const { deviceId, summary, at } of calls) {
        const kept = batches.get(key(tenantId, cycleId, batchIndex)) ?? {
          summaries: new Map(),
          collectedAt: at,
        };
        kept.summaries.set(deviceId, summary);
        if (kept.collectedAt < at) kept.collectedAt = at;
        batches.set(key(tenantId, cycleId, batchIndex), kept);
      }
    },
    async forget(tenantId, cycleId, batchIndex) {
      batches.delete(key(tenantId, cycleId, batchIndex));
    },
  };
}

/** A publisher that keeps every enriched batch the handler sends, in `sent`; `beforeSend` may fail a send. */
export function capturingPublisher(beforeSend: () => void = () => undefined): {
  sent: EnrichedBatch[];
  publisher: Publisher;
} {
  const sent: EnrichedBatch[] = [];
  const publisher: Publisher = {
    send: async (_topic, _contract, messages) => {
      beforeSend();
      for (const m of messages) sent.push(m.value as EnrichedBatch);
    },
    sendRaw: async () => undefined,
    close: async () => undefined,
  };
  return { sent, publisher };
}

export function setup(source: Partial<VulnerabilitySource>, overrides: Partial<EnrichHandlerDeps> = {}) {
  const { sent, publisher } = capturingPublisher();
  const statuses: Partial<TenantStatus>[] = [];
  /** The tenants whose client the handler let go of. */
  const forgotten: string[] = [];
  const sources: SourceProvider = {
    forTenant: () => ({
      machineVulnerabilities: source.machineVulnerabilities ?? (async () => []),
      bulkVulnerabilities: source.bulkVulnerabilities ?? (async () => undefined),
      ...(source.bulkFold ? { bulkFold: source.bulkFold } : {}),
      ...(source.exportGeneratedTime ? { exportGeneratedTime: source.exportGeneratedTime } : {}),
    }),
    forget: (tenantId) => void forgotten.push(tenantId),
    close: () => undefined,
  };
  let clock = Date.parse('2026-01-01T10:00:05.000Z');
  const renewals: string[] = [];
  /** The batches recorded lost, with their devices. */
  const lostBatches: { batchIndex: number; devices: number | undefined }[] = [];
  /** The batches recorded enriched. */
  const enrichedBatches: number[] = [];
  const bulkCache = memoryBulkCache(renewals);
  const handler = createEnrichHandler({
    tenants: {
      lookup: async (tenantId) => ({ record: tenantId === 't1' ? record : null, rebuilt: true }),
      updatePollingStatus: async (_tenantId, status) => {
        statuses.push(status as Partial<TenantStatus>);
        return true;
      },
    },
    sources,
    bulkCache,
    answers: memoryAnswers(),
    cycles: {
      addCorrections: async (_tenantId, _cycleId, batches) => batches,
      enriched: async (_tenantId, _cycleId, batchIndex) => void enrichedBatches.push(batchIndex),
      enrichedOrLostBatches: async () => 0,
      notInSnapshot: async () => [],
      holdOpen: async () => false,
      // Every cycle is begun and open: a cycle published or gone is tested in bulk-wait.test.ts.
      get: async () => ({}) as CycleState,
      // Batches claimed as two replicas share them are tested against Redis (batch-claim.int.test.ts).
      claimBatch: async () => 'claimed',
      renewBatchClaim: async () => true,
      releaseBatchClaim: async () => undefined,
      lost: async (_tenantId, _cycleId, batchIndex, devices) => {
        lostBatches.push({ batchIndex, devices });
        return true;
      },
    },
    publisher,
    topic: 'urs.devices-enriched',
    logger: silentLogger,
    metrics: new Registry({ processMetrics: false }),
    concurrency: 2,
    bulkWaitMs: 1_000,
    bulkClaimMs: 1_000,
    bulkPollMs: 5,
    now: () => new Date((clock += 1000)),
    ...overrides,
  });
  return { handler, sent, statuses, bulkCache, renewals, forgotten, lostBatches, enrichedBatches };
}

/** A count of `urs_vulnerability_fetches_total` as `metrics` serves it (0 for a series not served). */
export function fetched(metrics: Registry, mode: 'per-device' | 'bulk', outcome: string): number {
  const line = metrics
    .expose()
    .split('\n')
    .find((served) =>
      served.startsWith(`urs_vulnerability_fetches_total{mode="${mode}",outcome="${outcome}"} `),
    );
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

export const cve = (id: string, cvssV3: number | null): VulnerabilityLike => ({ id, cvssV3 });

/**
 * The real Defender sources over a local limiter and quota gate, opening secrets with `sealer`; `close` lets go
 * of them and their HTTPS agent.
 */
export function localSources(
  sealer: SecretSealer,
  now?: () => number,
): { sources: SourceProvider; close: () => void } {
  const agent = createHttpsAgent();
  const sources = createDefenderSources({
    sealer,
    limiter: createLocalLimiter(),
    quota: createLocalQuotaGate(),
    httpsAgent: agent,
    overrides: {},
    logger: silentLogger,
    metrics: new Registry({ processMetrics: false }),
    ...(now ? { now } : {}),
  });
  return {
    sources,
    close: () => {
      sources.close();
      agent.destroy();
    },
  };
}

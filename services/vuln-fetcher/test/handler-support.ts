import { randomBytes, randomUUID } from 'node:crypto';
import type { Agent } from 'node:https';
import type { InboundMessage, Publisher } from '@urs/bus';
import type { DeviceBatch, EnrichedBatch, TenantRecord, VulnerabilitySummary } from '@urs/contracts';
import { createHttpsAgent, createLocalLimiter, createLocalQuotaGate } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { createSecretSealer, type SecretSealer } from '@urs/secrets';
import type { FleetSpec, Simulator } from '@urs/simulator';
import type {
  AnsweredCalls,
  BulkExportState,
  BulkVulnerabilityCache,
  CycleState,
  TenantStatus,
} from '@urs/store';
import { Registry } from '@urs/telemetry';
import { inboundMessage, sealedTenantRecord } from '@urs/testkit';
import { createEnrichHandler, type EnrichHandlerDeps } from '../src/handler';
import {
  type DefenderSourceDeps,
  type SourceProvider,
  type VulnerabilitySource,
  createDefenderSources,
} from '../src/sources';
import type { VulnerabilityLike } from '../src/summarise';

// The enrich handler's unit-test fixtures: a tenant t1, its batches, an export cache in memory, and the
// handler over a fake source whose sends and status writes are recorded; and the real sources, over the
// simulator and its tenants whose secrets are sealed as the registrar seals them.

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

/** A sealer of a random key under key id k1, as a registrar's (another one's key under the same id). */
export const randomSealer = (): SecretSealer =>
  createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', randomBytes(32)]]) });

/** An app of a simulated tenant: its client id and secret, unique to the test. */
export interface SimApp {
  clientId: string;
  clientSecret: string;
}

/** A tenant of the simulator, with an Azure tenant and apps of its own, and its records. */
export interface SealedTenant {
  /** Seals the apps' secrets in the tenant's records. */
  sealer: SecretSealer;
  azureTenantId: string;
  apps: SimApp[];
  /** Adds the Azure tenant and its apps to `sim`, with `fleet`. */
  addTo(sim: Simulator, fleet: FleetSpec): void;
  /**
   * Tenant `tenantId`'s record of `revision` (1 unless told) for `app` (the first unless told), polled every
   * `pollIntervalMinutes` (60 unless told), its secret sealed anew (as the registrar re-seals it).
   */
  record(
    tenantId: string,
    options?: { revision?: number; app?: SimApp; pollIntervalMinutes?: number },
  ): TenantRecord;
}

/** A tenant with `apps` apps (1 unless told), their secrets sealed by `sealer` (one of a random key unless told). */
export function sealedTenant(options: { apps?: number; sealer?: SecretSealer } = {}): SealedTenant {
  const sealer = options.sealer ?? randomSealer();
  const azureTenantId = randomUUID();
  const apps = Array.from({ length: options.apps ?? 1 }, () => ({
    clientId: randomUUID(),
    clientSecret: `Zx8Q~${randomUUID()}Sec`,
  }));
  return {
    sealer,
    azureTenantId,
    apps,
    addTo: (sim, fleet) => sim.addTenant({ azureTenantId, apps, fleet }),
    record: (tenantId, { revision, app = apps[0]!, pollIntervalMinutes } = {}) =>
      sealedTenantRecord(tenantId, { azureTenantId, ...app }, sealer, { revision, pollIntervalMinutes }),
  };
}

/** Sources and what `close` lets go of: the sources and the HTTPS agent made for them. */
export interface OwnSources {
  sources: SourceProvider;
  close: () => void;
}

/**
 * The real Defender sources over a local limiter and quota gate, opening secrets with `sealer`, with a silent
 * logger and a registry of their own and calling Microsoft's endpoints; `deps` replaces any of these.
 */
export function localSources(
  sealer: SecretSealer,
  deps: Partial<Omit<DefenderSourceDeps, 'httpsAgent'>> = {},
): OwnSources {
  return ownSources(createHttpsAgent(), { sealer, overrides: {}, ...deps });
}

/** localSources calling the simulator `sim` instead, trusting its CA. */
export function simSources(
  sim: Simulator,
  sealer: SecretSealer,
  deps: Partial<Omit<DefenderSourceDeps, 'httpsAgent'>> = {},
): OwnSources {
  return ownSources(createHttpsAgent({ extraCa: sim.caPem }), {
    sealer,
    overrides: { authorityHost: sim.baseUrl, apiBase: sim.baseUrl },
    ...deps,
  });
}

function ownSources(
  httpsAgent: Agent,
  deps: Pick<DefenderSourceDeps, 'sealer' | 'overrides'> & Partial<DefenderSourceDeps>,
): OwnSources {
  const sources = createDefenderSources({
    limiter: createLocalLimiter(),
    quota: createLocalQuotaGate(),
    logger: silentLogger,
    metrics: new Registry({ processMetrics: false }),
    httpsAgent,
    ...deps,
  });
  return {
    sources,
    close: () => {
      sources.close();
      httpsAgent.destroy();
    },
  };
}

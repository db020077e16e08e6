// What a scenario's topics recorded (see scenario.ts), read back into each measured cycle's record: its
// batches' times at each stage and its summary.
import type { Kafka } from 'kafkajs';
import type { Topics } from '@urs/config';
import type { DeviceBatch, EnrichedBatch, ScoreBatch, ScoredDevice, VmsRiskSummary } from '@urs/contracts';
import { progress, type Progress } from './analysis';
import { readTopics, type SummaryRecord, type TopicTotals } from './kafka';

/** One tenant's cycle as the topics recorded it. */
export interface CycleRecord {
  tenantId: string;
  azureTenantId: string;
  fleet: number;
  summary: VmsRiskSummary;
  summaryAtMs: number;
  cycleStartedAtMs: number;
  /** The largest collectedAt of the cycle's enriched batches: its last vulnerability response. */
  lastCollectedAtMs: number;
  /** summary record time − last vulnerability response. */
  collectToVmsMs: number;
  /**
   * Devices the cycle scored without their vulnerabilities because fetching them failed (`FETCH_FAILED`):
   * a failed export leaves every device so, and the summary still goes out (complete, every device
   * incomplete). Absent in records of older results.
   */
  unfetchedDevices?: number;
  /** Devices whose vulnerabilities changed in the simulator since the tenant's cycle before (a next cycle only). */
  changedDevices?: number;
  /** The vuln-fetcher's `urs_bulk_export_snapshots_total` outcomes that grew over the cycle (a next cycle only). */
  snapshotOutcomes?: Record<string, number>;
  listed: { t: number; n: number }[];
  enriched: { t: number; n: number }[];
  scored: { t: number; n: number }[];
  published: { t: number; n: number }[];
}

interface CollectedEvents {
  totals: Record<string, TopicTotals>;
  /** Per cycle id: the batch-level events of each topic. */
  listed: Map<string, { t: number; n: number }[]>;
  enriched: Map<string, { t: number; n: number; collectedAtMs: number }[]>;
  scored: Map<string, { t: number; n: number }[]>;
  /** Per cycle id: devices scored without their vulnerabilities because fetching them failed. */
  unfetched: Map<string, number>;
  /** Per tenant id (the VMS key is `{tenantId}/{deviceId}`): one event per record. */
  published: Map<string, { t: number; n: number }[]>;
}

function push<T>(map: Map<string, T[]>, key: string, value: T): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/** Devices scored without their vulnerabilities because fetching them failed (`FETCH_FAILED`). */
export function unfetchedOf(devices: readonly Pick<ScoredDevice, 'missingReasons'>[]): number {
  return devices.filter((device) => device.missingReasons?.['criticalCves'] === 'FETCH_FAILED').length;
}

/** What a cycle's summary says of its devices, and how many were scored without their vulnerabilities. */
export interface CycleCompleteness {
  status: VmsRiskSummary['status'];
  /** Scored with a signal missing: in a sound run only signals the device list does not give (see cycleFault). */
  incomplete: number;
  /** Listed, never scored. */
  failed: number;
  /** Scored without their vulnerabilities because fetching them failed. */
  unfetched: number;
}

export function completeness(cycle: Pick<CycleRecord, 'summary' | 'unfetchedDevices'>): CycleCompleteness {
  const { status, devices } = cycle.summary;
  return {
    status,
    incomplete: devices.incomplete,
    failed: devices.failed,
    unfetched: cycle.unfetchedDevices ?? 0,
  };
}

/**
 * Why a cycle's numbers are not those of a sound run, or null: a partial summary, a device never scored, or
 * a device whose vulnerabilities could not be fetched (the cycle then goes on without them, faster than a
 * sound one). Other incomplete devices are expected: the simulator's fleet has devices whose listing leaves a
 * signal unknown or absent, excluded devices and devices Defender does not assess, as Microsoft's has.
 */
export function cycleFault(counts: CycleCompleteness): string | null {
  const faults = [
    ...(counts.status === 'partial' ? ['summary partial'] : []),
    ...(counts.failed > 0 ? [`${counts.failed} devices failed`] : []),
    ...(counts.unfetched > 0
      ? [`${counts.unfetched} devices scored without their vulnerabilities (fetch failed)`]
      : []),
  ];
  return faults.length > 0 ? faults.join(', ') : null;
}

/** The messages a tenant's key names: its own (`tenantId`) and its devices' (`tenantId/deviceId`). */
export function keyedBy(tenantId: string, key: Buffer | null): boolean {
  if (key === null || key.length < tenantId.length) return false;
  const text = key.toString('utf8');
  return text === tenantId || text.startsWith(`${tenantId}/`);
}

/** What the scenario's topics recorded, leaving out the warm-up tenant's messages (not its dead letters). */
export async function collect(
  kafka: Kafka,
  topics: Topics,
  groupId: string,
  warmupTenantId: string | undefined,
): Promise<CollectedEvents> {
  const events: CollectedEvents = {
    totals: {},
    listed: new Map(),
    enriched: new Map(),
    scored: new Map(),
    unfetched: new Map(),
    published: new Map(),
  };
  events.totals = await readTopics(
    kafka,
    Object.values(topics),
    groupId,
    (message) => {
      if (!message.value) return;
      if (message.topic === topics.vmsRiskScores) {
        const key = message.key?.toString('utf8') ?? '';
        push(events.published, key.slice(0, key.indexOf('/')), { t: message.timestampMs, n: 1 });
        return;
      }
      if (
        message.topic !== topics.deviceBatches &&
        message.topic !== topics.devicesEnriched &&
        message.topic !== topics.deviceScores
      )
        return;
      const value = JSON.parse(message.value.toString('utf8')) as DeviceBatch | EnrichedBatch | ScoreBatch;
      const event = { t: message.timestampMs, n: value.devices.length };
      if (message.topic === topics.deviceBatches) push(events.listed, value.cycleId, event);
      else if (message.topic === topics.deviceScores) {
        push(events.scored, value.cycleId, event);
        const unfetched = unfetchedOf((value as ScoreBatch).devices);
        if (unfetched > 0)
          events.unfetched.set(value.cycleId, (events.unfetched.get(value.cycleId) ?? 0) + unfetched);
      } else
        push(events.enriched, value.cycleId, {
          ...event,
          collectedAtMs: Date.parse((value as EnrichedBatch).collectedAt),
        });
    },
    // Dead letters count whoever's they are: one in the warm-up is a failure all the same.
    (message) =>
      warmupTenantId === undefined || message.topic === topics.dlq || !keyedBy(warmupTenantId, message.key),
  );
  return events;
}

export function cycleRecord(
  tenant: { tenantId: string; azureTenantId: string; size: number },
  summary: SummaryRecord,
  events: CollectedEvents,
): CycleRecord {
  const cycleId = summary.value.cycleId;
  const enriched = events.enriched.get(cycleId) ?? [];
  const lastCollectedAtMs =
    enriched.length > 0
      ? Math.max(...enriched.map((event) => event.collectedAtMs))
      : Date.parse(summary.value.collectedAt ?? '');
  return {
    tenantId: tenant.tenantId,
    azureTenantId: tenant.azureTenantId,
    fleet: tenant.size,
    summary: summary.value,
    summaryAtMs: summary.timestampMs,
    cycleStartedAtMs: Date.parse(summary.value.cycleStartedAt),
    lastCollectedAtMs,
    collectToVmsMs: summary.timestampMs - lastCollectedAtMs,
    listed: events.listed.get(cycleId) ?? [],
    enriched: enriched.map(({ t, n }) => ({ t, n })),
    scored: events.scored.get(cycleId) ?? [],
    unfetchedDevices: events.unfetched.get(cycleId) ?? 0,
    published: events.published.get(tenant.tenantId) ?? [],
  };
}

export function curves(cycle: CycleRecord): { enriched: Progress; scored: Progress; published: Progress } {
  return {
    enriched: progress(cycle.enriched),
    scored: progress(cycle.scored),
    published: progress(cycle.published),
  };
}

// What the results keep of each scenario (see report.ts): a fleet's slots and costs, each cycle's latency,
// the bulk run and a cycle's picture, and the shape of the results as a whole.
import { cpus } from 'node:os';
import { coresOverTime, meanServiceMs, percentile, round, slotUtilisation, span } from './analysis';
import type { MemorySpeed } from './calibrate';
import type { InternalCeiling } from './internal-ceiling';
import type { CycleRecord, ScenarioResult } from './scenario';
import { curves } from './scenario';
import { completeness, cycleFault, type CycleCompleteness } from './scenario-records';
import { costPerDevice, usageEach, type CostPerDevice } from './scenario-cost';
import type { TimelineInput } from './timeline';

export { snapshotOutcomes, snapshotOutcomesSince } from './window-counters';

/** Microsoft's quota (per app and tenant) of the per-device vulnerability endpoint (defender-api.md). */
export const PER_DEVICE_QUOTA = [
  { limit: 50, windowMs: 60_000 },
  { limit: 1_500, windowMs: 3_600_000 },
];

export interface FleetResult {
  devices: number;
  vulnerabilityCalls: number;
  /**
   * The headline: calls per second ÷ (10 ÷ the configured latency), the rate 10 slots at the latency the
   * fleet is run at could reach. The simulator's late timers and its CPU time on the shared cores count
   * against it, as the pipeline's own time does.
   */
  slotUtilisation: number;
  /**
   * Diagnostic: calls per second ÷ (10 ÷ the mean latency the simulator measured for these calls, arrival to
   * answer), which forgives the part of each call the simulator itself spent (its timers and its CPU).
   * Results written before this field existed have it as `slotUtilisation`, and the headline as
   * `slotUtilisationAtConfiguredLatency`.
   */
  slotUtilisationAtMeasuredLatency: number;
  /** Mean latency of the per-device calls at the simulator (arrival to answer), ms. */
  meanLatencyMs: number;
  callsPerSec: number;
  /** 10 slots ÷ the configured latency, calls/s: the headline's ceiling. */
  ceilingPerSec: number;
  /** 10 slots ÷ the simulator's measured mean latency, calls/s. */
  ceilingPerSecAtMeasuredLatency: number;
  vulnWindowMs: number;
  meanInFlight: number;
  peakConcurrency: number;
  cycleMs: number;
  listMs: number | null;
  collectToVmsMs: number;
  peakRssMb: Record<string, number>;
  cpuSec: Record<string, number>;
  cost: CostPerDevice;
  deadLetters: number;
  throttled: number;
  /** The cycle's summary status and devices: a cycle with a fault (see cycleFault) gets no verdict. */
  completeness: CycleCompleteness;
}

export interface CycleLatency {
  scenario: string;
  tenantId: string;
  /**
   * How the cycle's vulnerabilities were collected: per-device calls, or one bulk export; `bulk-next` is a
   * tenant's bulk cycle after its first (enriched from the latest export, its own read last), `bulk-same`
   * such a cycle with Microsoft's snapshot unchanged since the cycle before (no export read).
   */
  mode: 'per-device' | 'bulk' | 'bulk-next' | 'bulk-same';
  devices: number;
  collectToVmsMs: number;
  cycleMs: number;
  /**
   * For `bulk-next` / `bulk-same`: whether the vuln-fetcher's `urs_bulk_export_snapshots_total` over the cycle
   * says it is what its mode claims (`changed` for bulk-next, only `unchanged` for bulk-same); false marks a
   * cycle labelled by intent that ran otherwise. Null: no claim, or the outcomes were not read.
   */
  asClaimed?: boolean | null;
  /** The snapshot outcomes the vuln-fetcher counted over the cycle (a next cycle only). */
  snapshotOutcomes?: Record<string, number>;
  /** The cycle's summary status and devices (absent in older results): see cycleFault. */
  completeness?: CycleCompleteness;
}

export interface BenchResults {
  startedAt: string;
  finishedAt: string;
  machine: {
    cpus: number;
    node: string;
    kafkaBrokers: string[];
    redis: 'private' | 'shared';
    /**
     * The machine's speed before each scenario and at the end of the run, by a fixed workload
     * (`calibrate`, ms, lower is faster): compare runs by it before comparing their numbers. `endMs` is
     * null where the run did not get that far.
     */
    calibration: {
      workload: string;
      beforeScenarioMs: Record<string, number>;
      endMs: number | null;
      /**
       * The memory's speed at the same moments (`probeMemory`): the workload stays within the caches, and
       * the pipeline has run at half its best rate on a day the workload was at its fastest.
       */
      memory: { workload: string; beforeScenario: Record<string, MemorySpeed>; end: MemorySpeed | null };
    };
  };
  options: Record<string, unknown>;
  /** Per fleet size, against the configured latency: the headline (see FleetResult). */
  slotUtilisation: Record<string, number>;
  /** Per fleet size, against the simulator's measured mean latency: a diagnostic (see FleetResult). */
  slotUtilisationAtMeasuredLatency: Record<string, number>;
  publishLatencyP50Ms: number | null;
  /** Nearest rank: over fewer than 100 cycles, the largest of them. */
  publishLatencyP99Ms: number | null;
  /** The cycles the two percentiles were taken over: those of publishLatencyCycles with a latency. */
  publishLatencyCycleCount: number;
  /**
   * The same percentiles per vulnerability mode: a bulk cycle's whole fleet is enriched, scored and published
   * after its export's last page, a per-device cycle's only its last batch.
   */
  publishLatencyByMode: Record<string, { cycles: number; p50Ms: number | null; p99Ms: number | null }>;
  publishLatencyCycles: CycleLatency[];
  /** The median of the internal-ceiling runs. */
  internalDevicesPerSec: number | null;
  internal: InternalCeiling | null;
  /**
   * Per fleet size, per service. The per-device fleets run without the poller unless `--driver poller`
   * (the bench lists the fleet itself): its RSS is measured in the bulk runs (`scenarios`).
   */
  peakRssMbByService: Record<string, Record<string, number>>;
  /** How the largest service's peak RSS grew from the smallest fleet to the largest (see peakRssGrowth). */
  peakRssGrowth: PeakRssGrowth | null;
  fleets: Record<string, FleetResult>;
  costPerDevice: Record<string, CostPerDevice>;
  quotas: {
    perDeviceCallsPerHour: number;
    perDeviceRefreshHours100k: number;
    bulk: Record<string, unknown> | null;
  };
  scenarios: Record<
    string,
    {
      durationMs: number;
      deadLetters: number;
      devices: number;
      peakRssMb: Record<string, number>;
      cpuSec: Record<string, number>;
      /** From the first registration to the last summary. */
      windowMs: number;
      /** CPU seconds of the services, the broker, Redis and the simulator within windowMs. */
      windowCpuSec: Record<string, number>;
      /** Of windowCpuSec, the system (kernel) seconds. */
      windowSystemCpuSec: Record<string, number>;
      /** Minor page faults of the same processes within windowMs. */
      windowMinorFaults: Record<string, number>;
      /**
       * ms the services took to go idle after the last summary, before their memory was read; null when they
       * were still busy at the wait's end (read anyway). Absent in older results.
       */
      idleMs?: number | null;
      /** The same after the warm-up cycle, whose trailing work then lands in the window (absent without one). */
      warmupIdleMs?: number | null;
      sim: unknown;
    }
  >;
  errors: string[];
}

export function fleetResult(result: ScenarioResult, privateRedis: boolean): FleetResult {
  const cycle = result.cycles[0] as CycleRecord;
  const calls = result.sim.calls['vulnerabilities'] ?? 0;
  const latencyMs = meanServiceMs(result.sim.serviceTimeByKind['vulnerabilities'], result.spec.latencyMs);
  const firstCallAt = result.sim.firstCallAtByKind['vulnerabilities'];
  const util = slotUtilisation(
    result.samples,
    calls,
    cycle.lastCollectedAtMs,
    result.spec.latencyMs,
    firstCallAt,
  );
  const atMeasured = slotUtilisation(result.samples, calls, cycle.lastCollectedAtMs, latencyMs, firstCallAt);
  const listed = span(cycle.listed);
  return {
    devices: result.devices,
    vulnerabilityCalls: calls,
    slotUtilisation: round(util.utilisation, 3),
    slotUtilisationAtMeasuredLatency: round(atMeasured.utilisation, 3),
    meanLatencyMs: round(latencyMs, 2),
    callsPerSec: round(util.callsPerSec, 1),
    ceilingPerSec: round(util.ceilingPerSec, 1),
    ceilingPerSecAtMeasuredLatency: round(atMeasured.ceilingPerSec, 1),
    vulnWindowMs: round(util.windowMs),
    meanInFlight: round(util.meanInFlight, 2),
    peakConcurrency: result.sim.peakConcurrency,
    cycleMs: cycle.summaryAtMs - cycle.cycleStartedAtMs,
    listMs: listed ? listed.lastMs - cycle.cycleStartedAtMs : null,
    collectToVmsMs: cycle.collectToVmsMs,
    peakRssMb: usageEach(result, 'peakRssMb'),
    cpuSec: usageEach(result, 'cpuSec'),
    cost: costPerDevice(result, privateRedis),
    deadLetters: result.deadLetters,
    throttled: result.sim.throttled,
    completeness: completeness(cycle),
  };
}

/**
 * One error per measured cycle with a fault (see cycleFault): its numbers are from a failed or partial run,
 * and count toward no verdict.
 */
export function cycleFaults(results: readonly ScenarioResult[]): string[] {
  return results.flatMap((result) =>
    result.cycles.flatMap((cycle) => {
      const fault = cycleFault(completeness(cycle));
      return fault === null
        ? []
        : [`${result.spec.name}: cycle of ${cycle.tenantId} not sound: ${fault}; its numbers get no verdict`];
    }),
  );
}

/** A cycle's mode in the report: a bulk tenant's next cycle is `bulk-next`, or `bulk-same` when nothing changed. */
export function cycleMode(
  mode: 'per-device' | 'bulk',
  changedDevices: number | undefined,
): CycleLatency['mode'] {
  if (mode !== 'bulk' || changedDevices === undefined) return mode;
  return changedDevices > 0 ? 'bulk-next' : 'bulk-same';
}

/**
 * Whether a next cycle is what its mode claims, by the snapshot outcomes the vuln-fetcher counted over it: a
 * `bulk-next` cycle found Microsoft's snapshot changed, a `bulk-same` one found it unchanged and nothing else.
 * Null for a mode that claims neither, or without outcomes.
 */
export function claimedModeHeld(
  mode: CycleLatency['mode'],
  outcomes: Record<string, number> | undefined,
): boolean | null {
  if (outcomes === undefined || (mode !== 'bulk-next' && mode !== 'bulk-same')) return null;
  const counted = Object.entries(outcomes).filter(([, count]) => count > 0);
  if (mode === 'bulk-next') return (outcomes['changed'] ?? 0) > 0;
  return counted.length > 0 && counted.every(([outcome]) => outcome === 'unchanged');
}

export function cycleLatencies(results: ScenarioResult[]): CycleLatency[] {
  return results.flatMap((result) =>
    result.cycles.map((cycle) => {
      const mode = cycleMode(result.spec.mode, cycle.changedDevices);
      return {
        scenario: result.spec.name,
        tenantId: cycle.tenantId,
        mode,
        devices: cycle.summary.devices.total,
        collectToVmsMs: cycle.collectToVmsMs,
        cycleMs: cycle.summaryAtMs - cycle.cycleStartedAtMs,
        asClaimed: claimedModeHeld(mode, cycle.snapshotOutcomes),
        completeness: completeness(cycle),
        ...(cycle.snapshotOutcomes ? { snapshotOutcomes: cycle.snapshotOutcomes } : {}),
      };
    }),
  );
}

/**
 * Nearest-rank p50 and p99 of the cycles' collect → VMS latencies, and how many cycles they were taken
 * over: those with a latency (a cycle whose last response could not be read has none). Over fewer than 100
 * cycles the p99 is the largest.
 */
export function latencyPercentiles(cycles: CycleLatency[]): {
  p50: number | null;
  p99: number | null;
  cycles: number;
} {
  const values = cycles.map((cycle) => cycle.collectToVmsMs).filter((value) => Number.isFinite(value));
  if (values.length === 0) return { p50: null, p99: null, cycles: 0 };
  return { p50: percentile(values, 50), p99: percentile(values, 99), cycles: values.length };
}

/** Percentiles of the cycles of each vulnerability mode, with the cycles they were taken over. */
export function latencyByMode(cycles: CycleLatency[]): BenchResults['publishLatencyByMode'] {
  const modes = [...new Set(cycles.map((cycle) => cycle.mode))];
  return Object.fromEntries(
    modes.map((mode) => {
      const ofMode = cycles.filter((cycle) => cycle.mode === mode);
      const { p50, p99, cycles: counted } = latencyPercentiles(ofMode);
      return [mode, { cycles: counted, p50Ms: p50, p99Ms: p99 }];
    }),
  );
}

export interface PeakRssGrowth {
  /** The service with the largest peak RSS at the largest fleet. */
  service: string;
  fromDevices: number;
  toDevices: number;
  fromMb: number;
  toMb: number;
  /** toMb ÷ fromMb, to 0.01: 1 is flat. */
  ratio: number;
}

/**
 * The flatness of the fleets' memory: the peak RSS of the service largest at the largest fleet, there ÷ at
 * the smallest fleet. Null with fewer than two fleet sizes, when a service at the largest fleet was not read
 * (the largest is then unknown), or when that service was not measured at both.
 */
export function peakRssGrowth(bySize: Record<string, Record<string, number>>): PeakRssGrowth | null {
  const sizes = Object.keys(bySize)
    .map(Number)
    .sort((a, b) => a - b);
  if (sizes.length < 2) return null;
  const fromDevices = sizes[0] as number;
  const toDevices = sizes.at(-1) as number;
  const atLargest = Object.entries(bySize[String(toDevices)] ?? {});
  if (atLargest.some(([, mb]) => !Number.isFinite(mb))) return null;
  const largest = atLargest.reduce<[string, number] | null>(
    (best, entry) => (best === null || entry[1] > best[1] ? entry : best),
    null,
  );
  if (largest === null) return null;
  const [service, toMb] = largest;
  const fromMb = bySize[String(fromDevices)]?.[service];
  if (fromMb === undefined || !(fromMb > 0)) return null;
  return { service, fromDevices, toDevices, fromMb, toMb, ratio: round(toMb / fromMb, 2) };
}

export function bulkResult(result: ScenarioResult): Record<string, unknown> {
  const cycle = result.cycles[0] as CycleRecord;
  return {
    devices: cycle.summary.devices.total,
    cycleMs: cycle.summaryAtMs - cycle.cycleStartedAtMs,
    cycleMinutes: round((cycle.summaryAtMs - cycle.cycleStartedAtMs) / 60_000, 2),
    bulkCalls: result.sim.calls['bulk'] ?? 0,
    perDeviceCalls: result.sim.calls['vulnerabilities'] ?? 0,
    machinesCalls: result.sim.calls['machines'] ?? 0,
    throttled: result.sim.throttled,
    ...completeness(cycle),
    fault: cycleFault(completeness(cycle)),
    latencyMs: result.spec.latencyMs,
  };
}

/** The picture input of one cycle; its title names the run (its start) and the scenario. */
export function timelineOf(result: ScenarioResult, cycle: CycleRecord, runStartedAt: string): TimelineInput {
  const { enriched, scored, published } = curves(cycle);
  // A loop, not a spread: Math.max(...list) throws RangeError past ~125,000 arguments on Node 20.
  let last = cycle.summaryAtMs;
  for (const record of cycle.published) if (record.t > last) last = record.t;
  const end = last + 50;
  const seconds = (ms: number): string => (ms / 1000).toFixed(2);
  return {
    title: `${result.spec.name}, run of ${runStartedAt}: one cycle of ${cycle.summary.devices.total} devices (${result.spec.mode}, simulator latency ${result.spec.latencyMs} ms)`,
    subtitle:
      `cycle ${seconds(cycle.summaryAtMs - cycle.cycleStartedAtMs)} s; last vulnerability response → vms.risk-summary ${seconds(cycle.collectToVmsMs)} s; ` +
      `peak concurrency ${result.sim.peakConcurrency}; ${result.spec.driver === 'inject' ? 'device batches injected by the bench' : 'devices listed by the poller'}`,
    startMs: cycle.cycleStartedAtMs,
    endMs: end,
    devices: cycle.summary.devices.total,
    listed: cycle.listed,
    inFlight: result.samples.map((sample) => ({ t: sample.t, value: sample.inFlight })),
    cpu: coresOverTime(result.cpuSamples),
    cpus: cpus().length,
    slots: 10,
    enriched,
    scored,
    published,
    markers: [
      { t: cycle.lastCollectedAtMs, label: 'last vulnerability response', colour: '#c77800' },
      { t: cycle.summaryAtMs, label: 'vms.risk-summary', colour: '#b03b6f' },
    ],
  };
}

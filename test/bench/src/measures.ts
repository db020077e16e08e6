// What the results keep of each scenario (see report.ts): a fleet's slots and costs, each cycle's latency,
// the bulk run and a cycle's picture, and the shape of the results as a whole.
import { cpus } from 'node:os';
import { coresOverTime, meanServiceMs, percentile, round, slotUtilisation, span } from './analysis';
import type { MemorySpeed } from './calibrate';
import type { InternalCeiling } from './internal-ceiling';
import type { CycleRecord, ScenarioResult } from './scenario';
import { curves } from './scenario';
import { costPerDevice, usageEach, type CostPerDevice } from './scenario-cost';
import type { TimelineInput } from './timeline';

/** Microsoft's per-tenant quota of the per-device vulnerability endpoint (defender-api.md). */
export const PER_DEVICE_QUOTA = [
  { limit: 50, windowMs: 60_000 },
  { limit: 1_500, windowMs: 3_600_000 },
];

export interface FleetResult {
  devices: number;
  vulnerabilityCalls: number;
  /** Calls per second ÷ (10 ÷ the mean latency the simulator measured for these calls). */
  slotUtilisation: number;
  /** Calls per second ÷ (10 ÷ the configured latency): also counts the simulator's timer lateness. */
  slotUtilisationAtConfiguredLatency: number;
  /** Mean latency of the per-device calls at the simulator (arrival to answer), ms. */
  meanLatencyMs: number;
  callsPerSec: number;
  ceilingPerSec: number;
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
  /** Per fleet size, against the simulator's measured mean latency. */
  slotUtilisation: Record<string, number>;
  /** Per fleet size, against the configured latency. */
  slotUtilisationAtConfiguredLatency: Record<string, number>;
  publishLatencyP50Ms: number | null;
  publishLatencyP99Ms: number | null;
  /**
   * The same percentiles per vulnerability mode: a bulk cycle's whole fleet is enriched, scored and published
   * after its export's last page, a per-device cycle's only its last batch.
   */
  publishLatencyByMode: Record<string, { cycles: number; p50Ms: number | null; p99Ms: number | null }>;
  publishLatencyCycles: CycleLatency[];
  /** The median of the internal-ceiling runs. */
  internalDevicesPerSec: number | null;
  internal: InternalCeiling | null;
  /** Per fleet size, per service. */
  peakRssMbByService: Record<string, Record<string, number>>;
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
  const util = slotUtilisation(result.samples, calls, cycle.lastCollectedAtMs, latencyMs, firstCallAt);
  const atConfigured = slotUtilisation(
    result.samples,
    calls,
    cycle.lastCollectedAtMs,
    result.spec.latencyMs,
    firstCallAt,
  );
  const listed = span(cycle.listed);
  return {
    devices: result.devices,
    vulnerabilityCalls: calls,
    slotUtilisation: round(util.utilisation, 3),
    slotUtilisationAtConfiguredLatency: round(atConfigured.utilisation, 3),
    meanLatencyMs: round(latencyMs, 2),
    callsPerSec: round(util.callsPerSec, 1),
    ceilingPerSec: round(util.ceilingPerSec, 1),
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
  };
}

/** A cycle's mode in the report: a bulk tenant's next cycle is `bulk-next`, or `bulk-same` when nothing changed. */
export function cycleMode(
  mode: 'per-device' | 'bulk',
  changedDevices: number | undefined,
): CycleLatency['mode'] {
  if (mode !== 'bulk' || changedDevices === undefined) return mode;
  return changedDevices > 0 ? 'bulk-next' : 'bulk-same';
}

export function cycleLatencies(results: ScenarioResult[]): CycleLatency[] {
  return results.flatMap((result) =>
    result.cycles.map((cycle) => ({
      scenario: result.spec.name,
      tenantId: cycle.tenantId,
      mode: cycleMode(result.spec.mode, cycle.changedDevices),
      devices: cycle.summary.devices.total,
      collectToVmsMs: cycle.collectToVmsMs,
      cycleMs: cycle.summaryAtMs - cycle.cycleStartedAtMs,
    })),
  );
}

export function latencyPercentiles(cycles: CycleLatency[]): { p50: number | null; p99: number | null } {
  const values = cycles.map((cycle) => cycle.collectToVmsMs).filter((value) => Number.isFinite(value));
  if (values.length === 0) return { p50: null, p99: null };
  return { p50: percentile(values, 50), p99: percentile(values, 99) };
}

/** Percentiles of the cycles of each vulnerability mode. */
export function latencyByMode(cycles: CycleLatency[]): BenchResults['publishLatencyByMode'] {
  const modes = [...new Set(cycles.map((cycle) => cycle.mode))];
  return Object.fromEntries(
    modes.map((mode) => {
      const ofMode = cycles.filter((cycle) => cycle.mode === mode);
      const { p50, p99 } = latencyPercentiles(ofMode);
      return [mode, { cycles: ofMode.length, p50Ms: p50, p99Ms: p99 }];
    }),
  );
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
    status: cycle.summary.status,
    incomplete: cycle.summary.devices.incomplete,
    latencyMs: result.spec.latencyMs,
  };
}

/** The picture input of one cycle. */
export function timelineOf(result: ScenarioResult, cycle: CycleRecord): TimelineInput {
  const { enriched, scored, published } = curves(cycle);
  const end = Math.max(cycle.summaryAtMs, ...published.map((point) => point.t)) + 50;
  const seconds = (ms: number): string => (ms / 1000).toFixed(2);
  return {
    title: `${result.spec.name}: one cycle of ${cycle.summary.devices.total} devices (${result.spec.mode}, simulator latency ${result.spec.latencyMs} ms)`,
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

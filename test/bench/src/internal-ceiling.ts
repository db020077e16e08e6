// The internal ceiling (see report.ts): the pipeline's own rate and CPU per device with the simulator's
// latency at 0, over the runs of its scenario.
import { percentile, round, span } from './analysis';
import type { CycleRecord, ScenarioResult } from './scenario';
import { costPerDevice, usageEach, type CostPerDevice } from './scenario-cost';
import { completeness, cycleFault, type CycleCompleteness } from './scenario-records';

/** Scenarios of the internal ceiling are named `internal-<run>`. */
export const INTERNAL = 'internal';

/** One run of the internal-ceiling scenario. */
export interface InternalRun {
  scenario: string;
  devices: number;
  mode: string;
  /** Devices of the cycle the services handled before this one's window (0: measured from a cold start). */
  warmupDevices: number;
  firstBatchToSummaryMs: number;
  /** Devices per second from the first device batch to the summary record (the whole pipeline behind the listing). */
  devicesPerSec: number;
  stageDevicesPerSec: Record<'list' | 'enrich' | 'score' | 'publish', number | null>;
  cpuSec: Record<string, number>;
  /**
   * CPU of every process (services, broker, Redis, simulator) from the first registration to the summary, in
   * µs per device: what the pipeline costs, which moves far less with the machine's load than the rate does.
   */
  cpuMicrosPerDevice: number;
  /**
   * The same without the simulator: the pipeline's own cost (the services, the broker and Redis). The
   * simulator stands in for Microsoft, whose CPU is not on the pipeline's machines in production.
   */
  pipelineCpuMicrosPerDevice: number;
  peakRssMb: Record<string, number>;
  cost: CostPerDevice;
  /** The cycle's summary status and devices: a run with a fault (see cycleFault) gets no verdict. */
  completeness: CycleCompleteness;
}

/** The internal ceiling over its runs: the run at the (nearest-rank) median, with every run's result beside it. */
export interface InternalCeiling extends InternalRun {
  runs: {
    scenario: string;
    devicesPerSec: number;
    cpuMicrosPerDevice: number;
    pipelineCpuMicrosPerDevice: number;
    completeness: CycleCompleteness;
  }[];
  /** Runs whose cycle had a fault (see cycleFault): the ceiling then gets no verdict. */
  unsoundRuns: number;
  devicesPerSecMin: number;
  devicesPerSecMax: number;
}

/** CPU seconds of all processes, those measured (NaN readings left out). */
export function totalCpuSec(cpuSec: Record<string, number>): number {
  return Object.values(cpuSec).reduce((sum, value) => sum + (Number.isFinite(value) ? value : 0), 0);
}

/** CPU seconds of all processes (those measured; NaN readings left out) per device, in µs. */
export function cpuMicrosPerDevice(cpuSec: Record<string, number>, devices: number): number {
  return devices > 0 ? (totalCpuSec(cpuSec) * 1e6) / devices : NaN;
}

/** The simulator's process in the CPU readings: Microsoft's stand-in, not part of the pipeline. */
export const SIMULATOR = 'simulator';

/**
 * Table columns: each of `services`, followed by the later replicas of it among `present`
 * (`vuln-fetcher#2`, `vuln-fetcher#3`, …, in order).
 */
export function withReplicas(services: readonly string[], present: Iterable<string>): string[] {
  const names = new Set(present);
  return services.flatMap((service) => [
    service,
    ...[...names]
      .filter((name) => name.startsWith(`${service}#`))
      .sort((a, b) => Number(a.split('#')[1]) - Number(b.split('#')[1])),
  ]);
}

/** cpuMicrosPerDevice of every process but the simulator. */
export function pipelineCpuMicrosPerDevice(cpuSec: Record<string, number>, devices: number): number {
  const { [SIMULATOR]: _simulator, ...pipeline } = cpuSec;
  return cpuMicrosPerDevice(pipeline, devices);
}

/** `privateRedis`: whether the run's Redis was the bench's own (a shared one's commands are not counted). */
export function internalThroughput(result: ScenarioResult, privateRedis: boolean): InternalRun {
  const cycle = result.cycles[0] as CycleRecord;
  const firstBatch = Math.min(...cycle.listed.map((event) => event.t));
  const devicesPerSec = (cycle.summary.devices.total * 1000) / Math.max(1, cycle.summaryAtMs - firstBatch);
  const stage = (events: { t: number; n: number }[]): number | null => {
    const s = span(events);
    return s ? round(s.perSec) : null;
  };
  return {
    scenario: result.spec.name,
    devices: cycle.summary.devices.total,
    mode: result.spec.mode,
    warmupDevices: result.spec.warmupDevices,
    firstBatchToSummaryMs: cycle.summaryAtMs - firstBatch,
    devicesPerSec: round(devicesPerSec),
    stageDevicesPerSec: {
      list: stage(cycle.listed),
      enrich: stage(cycle.enriched),
      score: stage(cycle.scored),
      publish: stage(cycle.published),
    },
    cpuSec: usageEach(result, 'cpuSec'),
    cpuMicrosPerDevice: round(cpuMicrosPerDevice(result.windowCpuSec, cycle.summary.devices.total)),
    pipelineCpuMicrosPerDevice: round(
      pipelineCpuMicrosPerDevice(result.windowCpuSec, cycle.summary.devices.total),
    ),
    peakRssMb: usageEach(result, 'peakRssMb'),
    cost: costPerDevice(result, privateRedis),
    completeness: completeness(cycle),
  };
}

/**
 * The internal ceiling of several runs of the same scenario: the run whose throughput is the nearest-rank
 * median (a real run, so its stage rates, CPU and cost belong together), with the spread of all runs.
 * Null without runs.
 */
export function internalCeiling(
  results: readonly ScenarioResult[],
  privateRedis: boolean,
): InternalCeiling | null {
  if (results.length === 0) return null;
  const runs = results.map((result) => internalThroughput(result, privateRedis));
  const rates = runs.map((run) => run.devicesPerSec);
  const median = percentile(rates, 50);
  const atMedian = runs.find((run) => run.devicesPerSec === median) as InternalRun;
  return {
    ...atMedian,
    runs: runs.map((run) => ({
      scenario: run.scenario,
      devicesPerSec: run.devicesPerSec,
      cpuMicrosPerDevice: run.cpuMicrosPerDevice,
      pipelineCpuMicrosPerDevice: run.pipelineCpuMicrosPerDevice,
      completeness: run.completeness,
    })),
    unsoundRuns: runs.filter((run) => cycleFault(run.completeness) !== null).length,
    devicesPerSecMin: Math.min(...rates),
    devicesPerSecMax: Math.max(...rates),
  };
}

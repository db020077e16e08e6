import { cpus } from 'node:os';
import {
  coresOverTime,
  meanServiceMs,
  percentile,
  perDeviceRefreshHours,
  round,
  slotUtilisation,
  span,
} from './analysis';
import type { MemorySpeed } from './calibrate';
import type { CycleRecord, ScenarioResult } from './scenario';
import { curves } from './scenario';
import type { TimelineInput } from './timeline';

/** Microsoft's per-tenant quota of the per-device vulnerability endpoint (defender-api.md). */
export const PER_DEVICE_QUOTA = [
  { limit: 50, windowMs: 60_000 },
  { limit: 1_500, windowMs: 3_600_000 },
];

export interface CostPerDevice {
  kafkaMessages: number;
  kafkaBytes: number;
  byTopic: Record<string, { messages: number; bytes: number }>;
  /** Redis commands per device (null with a shared Redis: other users' commands would be counted). */
  redisCommands: number | null;
  redisTopCommands: Record<string, number>;
}

/** How each whole-run counter is rounded in the results: peak RSS to 0.1 MB, CPU to 10 ms. */
const USAGE_DIGITS = { peakRssMb: 1, cpuSec: 2 } as const;

/** Each process's `counter` over the whole scenario (peak RSS in MB, or CPU in seconds), rounded. */
export function usageEach(
  result: Pick<ScenarioResult, 'usage'>,
  counter: keyof typeof USAGE_DIGITS,
): Record<string, number> {
  return Object.fromEntries(
    Object.entries(result.usage).map(([name, usage]) => [name, round(usage[counter], USAGE_DIGITS[counter])]),
  );
}

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

/** `bench-<run>-<scenario>-urs.device-batches` → `urs.device-batches`. */
export function shortTopic(topic: string): string {
  return /(urs|vms)\.[a-z-]+$/.exec(topic)?.[0] ?? topic;
}

export function costPerDevice(result: ScenarioResult, privateRedis: boolean): CostPerDevice {
  const devices = Math.max(1, result.devices);
  const byTopic: CostPerDevice['byTopic'] = {};
  let messages = 0;
  let bytes = 0;
  for (const [topic, totals] of Object.entries(result.kafka)) {
    messages += totals.messages;
    bytes += totals.bytes;
    byTopic[shortTopic(topic)] = {
      messages: round(totals.messages / devices, 4),
      bytes: round(totals.bytes / devices, 1),
    };
  }
  const redisTotal = Object.values(result.redisCalls).reduce((sum, calls) => sum + calls, 0);
  const top = Object.entries(result.redisCalls)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 10);
  return {
    kafkaMessages: round(messages / devices, 3),
    kafkaBytes: round(bytes / devices, 0),
    byTopic,
    redisCommands: privateRedis ? round(redisTotal / devices, 2) : null,
    redisTopCommands: Object.fromEntries(top.map(([command, calls]) => [command, round(calls / devices, 3)])),
  };
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
}

/** The internal ceiling over its runs: the run at the (nearest-rank) median, with every run's result beside it. */
export interface InternalCeiling extends InternalRun {
  runs: {
    scenario: string;
    devicesPerSec: number;
    cpuMicrosPerDevice: number;
    pipelineCpuMicrosPerDevice: number;
  }[];
  devicesPerSecMin: number;
  devicesPerSecMax: number;
}

/** CPU seconds of all processes, those measured (NaN readings left out). */
function totalCpuSec(cpuSec: Record<string, number>): number {
  return Object.values(cpuSec).reduce((sum, value) => sum + (Number.isFinite(value) ? value : 0), 0);
}

/** CPU seconds of all processes (those measured; NaN readings left out) per device, in µs. */
export function cpuMicrosPerDevice(cpuSec: Record<string, number>, devices: number): number {
  return devices > 0 ? (totalCpuSec(cpuSec) * 1e6) / devices : NaN;
}

/** The simulator's process in the CPU readings: Microsoft's stand-in, not part of the pipeline. */
const SIMULATOR = 'simulator';

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

export function internalThroughput(result: ScenarioResult): InternalRun {
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
    cost: costPerDevice(result, true),
  };
}

/**
 * The internal ceiling of several runs of the same scenario: the run whose throughput is the nearest-rank
 * median (a real run, so its stage rates, CPU and cost belong together), with the spread of all runs.
 * Null without runs.
 */
export function internalCeiling(results: readonly ScenarioResult[]): InternalCeiling | null {
  if (results.length === 0) return null;
  const runs = results.map(internalThroughput);
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
    })),
    devicesPerSecMin: Math.min(...rates),
    devicesPerSecMax: Math.max(...rates),
  };
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

/**
 * A process's kernel share of one scenario: its system CPU seconds, their share of its CPU, and its minor
 * page faults per device (each costs 1.3–16 µs of CPU on the build VM, by day); "–" when it was not read.
 */
export function kernelCell(
  cpuSec: number | undefined,
  systemCpuSec: number | undefined,
  minorFaults: number | undefined,
  devices: number,
): string {
  if (cpuSec === undefined || systemCpuSec === undefined || !Number.isFinite(systemCpuSec)) return '–';
  const share = cpuSec > 0 ? ` (${round((systemCpuSec / cpuSec) * 100, 0)} %)` : '';
  const faults =
    minorFaults !== undefined && Number.isFinite(minorFaults) && devices > 0
      ? ` · ${round(minorFaults / devices, 2)}`
      : '';
  return `${round(systemCpuSec, 2)}${share}${faults}`;
}

function ms(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  return value >= 10_000 ? `${(value / 1000).toFixed(1)} s` : `${Math.round(value)} ms`;
}

function verdict(ok: boolean | null): string {
  return ok === null ? '–' : ok ? 'met' : '**missed**';
}

/** The machine's speed as the report states it: its range over the run, and before each scenario. */
export function calibrationLine(calibration: Omit<BenchResults['machine']['calibration'], 'memory'>): string {
  const timings = [
    ...Object.entries(calibration.beforeScenarioMs).map(([scenario, ms]) => `${ms} ms before ${scenario}`),
    ...(calibration.endMs === null ? [] : [`${calibration.endMs} ms at the end`]),
  ];
  const all = [
    ...Object.values(calibration.beforeScenarioMs),
    ...(calibration.endMs === null ? [] : [calibration.endMs]),
  ];
  const range =
    all.length === 0
      ? 'not measured'
      : `${Math.min(...all)}–${Math.max(...all)} ms (slowest ÷ fastest ${round(Math.max(...all) / Math.min(...all), 2)})`;
  return (
    `Machine speed, by a fixed workload in the bench's own process (${calibration.workload}; median of 5 ` +
    `rounds, lower is faster): ${range}` +
    (timings.length === 0 ? '.' : `; ${timings.join(', ')}.`) +
    ` Compare runs by it before comparing their numbers.`
  );
}

/** The memory's speed as the report states it: each probe's range over the run, and before each scenario. */
export function memoryLine(memory: BenchResults['machine']['calibration']['memory']): string {
  const moments: [string, MemorySpeed][] = [
    ...Object.entries(memory.beforeScenario).map(([scenario, speed]): [string, MemorySpeed] => [
      `before ${scenario}`,
      speed,
    ]),
    ...(memory.end === null ? [] : [['at the end', memory.end] as [string, MemorySpeed]]),
  ];
  const range = (values: number[], unit: string): string =>
    `${Math.min(...values)}–${Math.max(...values)} ${unit}`;
  const measured =
    moments.length === 0
      ? 'not measured.'
      : `a dependent read ${range(
          moments.map(([, speed]) => speed.readNs),
          'ns',
        )}, a fresh page ${range(
          moments.map(([, speed]) => speed.freshPageUs),
          'µs',
        )}; ${moments.map(([when, speed]) => `${speed.readNs} ns · ${speed.freshPageUs} µs ${when}`).join(', ')}.`;
  return `Memory speed, in the same process (${memory.workload}; medians of 3 rounds, lower is faster): ${measured}`;
}

/** The markdown summary next to latest.json. */
export function renderMarkdown(results: BenchResults): string {
  const lines: string[] = [];
  const sizes = Object.keys(results.fleets);
  lines.push(`# Pipeline benchmark — ${results.startedAt}`, '');
  lines.push(
    `${results.machine.cpus} CPUs, Node ${results.machine.node}, Kafka ${results.machine.kafkaBrokers.join(',')}, ${results.machine.redis} Redis; ` +
      `five services as separate processes; the simulator as its own process.`,
    '',
    calibrationLine(results.machine.calibration),
    '',
    memoryLine(results.machine.calibration.memory),
    '',
  );
  lines.push('| measure | value | target | |', '|---|---|---|---|');
  for (const size of sizes) {
    const value = results.slotUtilisation[size] as number;
    const fleet = results.fleets[size] as FleetResult;
    lines.push(
      `| slot utilisation, ${Number(size).toLocaleString('en-US')} devices (at the simulator's mean latency ${fleet.meanLatencyMs} ms; at the configured ${results.options['latencyMs'] as number} ms: ${fleet.slotUtilisationAtConfiguredLatency.toFixed(3)}) | ${value.toFixed(3)} | ≥ 0.95 | ${verdict(value >= 0.95)} |`,
    );
  }
  const p99 = results.publishLatencyP99Ms;
  lines.push(`| last vuln response → vms.risk-summary p50 | ${ms(results.publishLatencyP50Ms)} | | |`);
  lines.push(
    `| last vuln response → vms.risk-summary p99 (${results.publishLatencyCycles.length} cycles) | ${ms(p99)} | ≤ 2 s | ${verdict(p99 === null ? null : p99 <= 2000)} |`,
  );
  for (const [mode, latency] of Object.entries(results.publishLatencyByMode))
    lines.push(
      `| … ${mode} cycles only (${latency.cycles}): p50 / p99 | ${ms(latency.p50Ms)} / ${ms(latency.p99Ms)} | ≤ 2 s | ${verdict(latency.p99Ms === null ? null : latency.p99Ms <= 2000)} |`,
    );
  const internal = results.internal;
  const runs =
    internal && internal.runs.length > 1
      ? `; median of ${internal.runs.length} runs, ${internal.devicesPerSecMin}–${internal.devicesPerSecMax}`
      : '';
  const warm = internal?.warmupDevices ? `, after a warm-up cycle of ${internal.warmupDevices} devices` : '';
  lines.push(
    `| internal ceiling (devices/s, latency 0${warm}${runs}) | ${internal?.devicesPerSec ?? '–'} | ≥ 10,000 | ${verdict(internal === null ? null : internal.devicesPerSec >= 10_000)} |`,
  );
  if (internal) {
    lines.push(
      `| … CPU per device of that run: all processes / without the simulator | ${internal.cpuMicrosPerDevice} / ${internal.pipelineCpuMicrosPerDevice} µs | under 200 µs for 10,000/s on 2 cores | |`,
    );
  }
  for (const size of sizes) {
    const rss = results.peakRssMbByService[size] ?? {};
    const max = Math.max(...Object.values(rss));
    lines.push(
      `| largest peak RSS, ${Number(size).toLocaleString('en-US')} devices | ${round(max)} MB | ≤ 300 MB at 100k, flat | ${Number(size) >= 100_000 ? verdict(max <= 300) : ''} |`,
    );
  }
  lines.push(
    `| per-device refresh of 100,000 devices under Microsoft's quotas | ${round(results.quotas.perDeviceRefreshHours100k, 1)} h | computed (${results.quotas.perDeviceCallsPerHour} calls/h binding) | |`,
  );
  if (results.quotas.bulk) {
    const bulk = results.quotas.bulk as {
      cycleMs: number;
      devices: number;
      bulkCalls: number;
      throttled: number;
    };
    lines.push(
      `| bulk export refresh of ${bulk.devices.toLocaleString('en-US')} devices, quotas on | ${ms(bulk.cycleMs)} | measured (${bulk.bulkCalls} bulk calls, ${bulk.throttled} throttled) | |`,
    );
  }
  lines.push('');
  if (sizes.length > 0) {
    lines.push('## Fleets (one tenant, per-device calls, simulator quotas off)', '');
    lines.push(
      '| devices | vuln calls | calls/s | mean latency at the simulator | ceiling/s | utilisation | … at the configured latency | mean in flight | peak concurrency | cycle | listing | collect → VMS | dead letters |',
    );
    lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const size of sizes) {
      const fleet = results.fleets[size] as FleetResult;
      lines.push(
        `| ${fleet.devices} | ${fleet.vulnerabilityCalls} | ${fleet.callsPerSec} | ${fleet.meanLatencyMs} ms | ${fleet.ceilingPerSec} | ${fleet.slotUtilisation} | ${fleet.slotUtilisationAtConfiguredLatency} | ${fleet.meanInFlight} | ${fleet.peakConcurrency} | ${ms(fleet.cycleMs)} | ${ms(fleet.listMs)} | ${ms(fleet.collectToVmsMs)} | ${fleet.deadLetters} |`,
      );
    }
    lines.push('', '### Peak RSS (MB) and CPU (s) per service', '');
    const services = [
      ...new Set(sizes.flatMap((size) => Object.keys((results.fleets[size] as FleetResult).peakRssMb))),
    ];
    lines.push(`| devices | ${services.join(' | ')} |`, `|---|${services.map(() => '---').join('|')}|`);
    for (const size of sizes) {
      const fleet = results.fleets[size] as FleetResult;
      lines.push(
        `| ${size} | ${services.map((name) => `${fleet.peakRssMb[name] ?? '–'} MB / ${fleet.cpuSec[name] ?? '–'} s`).join(' | ')} |`,
      );
    }
  }
  const costs = Object.entries(results.costPerDevice);
  if (costs.length > 0) {
    lines.push('', '## Cost per device', '');
    lines.push(
      '| scenario | Kafka messages | Kafka bytes (key+value) | Redis commands | top Redis commands per device |',
      '|---|---|---|---|---|',
    );
    for (const [name, cost] of costs) {
      const top = Object.entries(cost.redisTopCommands)
        .slice(0, 6)
        .map(([command, calls]) => `${command} ${calls}`)
        .join(', ');
      lines.push(
        `| ${name} | ${cost.kafkaMessages} | ${cost.kafkaBytes} | ${cost.redisCommands ?? 'n/a (shared Redis)'} | ${top} |`,
      );
    }
    const [firstName, first] = costs[0] as [string, CostPerDevice];
    lines.push('', `Bytes per device by topic (${firstName}):`, '');
    lines.push('| topic | messages/device | bytes/device |', '|---|---|---|');
    for (const [topic, cost] of Object.entries(first.byTopic))
      lines.push(`| ${topic} | ${cost.messages} | ${cost.bytes} |`);
  }
  const scenarios = Object.entries(results.scenarios);
  if (scenarios.length > 0) {
    const services = withReplicas(
      ['registrar', 'poller', 'vuln-fetcher', 'scorer', 'publisher'],
      scenarios.flatMap(([, scenario]) => Object.keys(scenario.peakRssMb)),
    );
    lines.push(
      '',
      '## Peak RSS (MB) / CPU (s) per scenario',
      '',
      `| scenario | devices | ${services.join(' | ')} |`,
      `|---|---|${services.map(() => '---').join('|')}|`,
    );
    for (const [name, scenario] of scenarios) {
      lines.push(
        `| ${name} | ${scenario.devices} | ${services.map((service) => (scenario.peakRssMb[service] === undefined ? '–' : `${scenario.peakRssMb[service]} / ${scenario.cpuSec[service]}`)).join(' | ')} |`,
      );
    }
    const processes = [...services, 'kafka', 'redis', SIMULATOR];
    lines.push(
      '',
      '## Where the two cores went: CPU (s) from the first registration to the last summary',
      '',
      `| scenario | window | ${processes.join(' | ')} | all | of 2 cores | µs per device | … without the simulator |`,
      `|---|---|${processes.map(() => '---').join('|')}|---|---|---|---|`,
    );
    for (const [name, scenario] of scenarios) {
      const cpu = scenario.windowCpuSec;
      const all = totalCpuSec(cpu);
      const share = scenario.windowMs > 0 ? all / ((scenario.windowMs / 1000) * 2) : NaN;
      lines.push(
        `| ${name} | ${ms(scenario.windowMs)} | ${processes.map((process) => cpu[process] ?? '–').join(' | ')} | ${round(all, 1)} | ${round(share * 100, 0)} % | ${round(cpuMicrosPerDevice(cpu, scenario.devices))} | ${round(pipelineCpuMicrosPerDevice(cpu, scenario.devices))} |`,
      );
    }
    lines.push(
      '',
      '## … of it in the kernel: system CPU (s, share of the process) · minor page faults per device',
      '',
      `| scenario | ${processes.join(' | ')} |`,
      `|---|${processes.map(() => '---').join('|')}|`,
    );
    for (const [name, scenario] of scenarios) {
      const cells = processes.map((process) =>
        kernelCell(
          scenario.windowCpuSec[process],
          scenario.windowSystemCpuSec[process],
          scenario.windowMinorFaults[process],
          scenario.devices,
        ),
      );
      lines.push(`| ${name} | ${cells.join(' | ')} |`);
    }
  }
  if (results.publishLatencyCycles.length > 0) {
    lines.push(
      '',
      '## Cycles (collect → VMS)',
      '',
      '| scenario | tenant | mode | devices | cycle | last vuln response → summary |',
      '|---|---|---|---|---|---|',
    );
    for (const cycle of results.publishLatencyCycles)
      lines.push(
        `| ${cycle.scenario} | ${cycle.tenantId} | ${cycle.mode} | ${cycle.devices} | ${ms(cycle.cycleMs)} | ${ms(cycle.collectToVmsMs)} |`,
      );
  }
  if (results.internal)
    lines.push('', '## Internal ceiling', '', '```json', JSON.stringify(results.internal, null, 2), '```');
  if (results.quotas.bulk)
    lines.push(
      '',
      '## Bulk export under quotas',
      '',
      '```json',
      JSON.stringify(results.quotas.bulk, null, 2),
      '```',
    );
  if (results.errors.length > 0)
    lines.push(
      '',
      '## Errors',
      '',
      ...results.errors.map((error) => `- ${error.replace(/\n/g, ' ').slice(0, 600)}`),
    );
  lines.push('');
  return lines.join('\n');
}

export { perDeviceRefreshHours };

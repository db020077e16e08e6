import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import type { BenchOptions } from './args';
import { perDeviceRefreshHours, round, roundEach } from './analysis';
import { CALIBRATION_WORKLOAD, MEMORY_WORKLOAD, type MemorySpeed } from './calibrate';
import {
  PER_DEVICE_QUOTA,
  bulkResult,
  costPerDevice,
  cycleFaults,
  cycleLatencies,
  fleetResult,
  INTERNAL,
  internalCeiling,
  latencyByMode,
  latencyPercentiles,
  peakRssGrowth,
  renderMarkdown,
  usageEach,
  type BenchResults,
} from './report';
import type { RunContext, ScenarioResult } from './scenario';

/** The machine's speed before each scenario and at the end of the run (see `calibrate` and `probeMemory`). */
export interface Speed {
  beforeScenarioMs: Record<string, number>;
  endMs: number | null;
  memoryBeforeScenario: Record<string, MemorySpeed>;
  memoryEnd: MemorySpeed | null;
}

export function machineSpeedText(workloadMs: number, memory: MemorySpeed): string {
  return (
    `${workloadMs} ms for the fixed workload, ${memory.readNs} ns a dependent read, ` +
    `${memory.freshPageUs} µs a fresh page (lower is faster)`
  );
}

export function buildResults(
  options: BenchOptions,
  ctx: RunContext,
  startedAt: string,
  results: ScenarioResult[],
  errors: string[],
  speed: Speed,
): BenchResults {
  const fleets = results.filter((result) => result.spec.name.startsWith('fleet-'));
  const fleetEntries = fleets.flatMap((result) => {
    try {
      return [[String(result.spec.tenants[0]), fleetResult(result, ctx.privateRedis)] as const];
    } catch (error) {
      errors.push(`${result.spec.name}: ${(error as Error).message}`);
      return [];
    }
  });
  errors.push(...cycleFaults(results));
  const fleetMap = Object.fromEntries(fleetEntries);
  const latencies = cycleLatencies(results);
  const { p50, p99, cycles: latencyCycles } = latencyPercentiles(latencies);
  const peakRssMbByService = Object.fromEntries(fleetEntries.map(([size, fleet]) => [size, fleet.peakRssMb]));
  const internal = internalCeiling(
    results.filter((result) => result.spec.name.startsWith(`${INTERNAL}-`)),
    ctx.privateRedis,
  );
  const bulk = results.find((result) => result.spec.name === 'bulk-quotas');
  const refresh = perDeviceRefreshHours(100_000, PER_DEVICE_QUOTA);
  return {
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      node: process.version,
      kafkaBrokers: ctx.kafkaBrokers,
      redis: ctx.privateRedis ? 'private' : 'shared',
      calibration: {
        workload: CALIBRATION_WORKLOAD,
        beforeScenarioMs: speed.beforeScenarioMs,
        endMs: speed.endMs,
        memory: {
          workload: MEMORY_WORKLOAD,
          beforeScenario: speed.memoryBeforeScenario,
          end: speed.memoryEnd,
        },
      },
    },
    options: { ...options },
    slotUtilisation: Object.fromEntries(fleetEntries.map(([size, fleet]) => [size, fleet.slotUtilisation])),
    slotUtilisationAtMeasuredLatency: Object.fromEntries(
      fleetEntries.map(([size, fleet]) => [size, fleet.slotUtilisationAtMeasuredLatency]),
    ),
    publishLatencyP50Ms: p50,
    publishLatencyP99Ms: p99,
    publishLatencyCycleCount: latencyCycles,
    publishLatencyByMode: latencyByMode(latencies),
    publishLatencyCycles: latencies,
    internalDevicesPerSec: internal ? internal.devicesPerSec : null,
    internal,
    peakRssMbByService,
    peakRssGrowth: peakRssGrowth(peakRssMbByService),
    fleets: fleetMap,
    costPerDevice: Object.fromEntries(
      results.map((result) => [result.spec.name, costPerDevice(result, ctx.privateRedis)]),
    ),
    quotas: {
      perDeviceCallsPerHour: refresh.callsPerHour,
      perDeviceRefreshHours100k: round(refresh.hours, 2),
      bulk: bulk ? bulkResult(bulk) : null,
    },
    scenarios: Object.fromEntries(
      results.map((result) => [
        result.spec.name,
        {
          durationMs: result.durationMs,
          deadLetters: result.deadLetters,
          devices: result.devices,
          peakRssMb: usageEach(result, 'peakRssMb'),
          cpuSec: usageEach(result, 'cpuSec'),
          windowMs: result.windowMs,
          windowCpuSec: roundEach(result.windowCpuSec, 2),
          windowSystemCpuSec: roundEach(result.windowSystemCpuSec, 2),
          windowMinorFaults: result.windowMinorFaults,
          idleMs: result.idleMs,
          ...(result.warmupIdleMs === undefined ? {} : { warmupIdleMs: result.warmupIdleMs }),
          sim: {
            calls: result.sim.calls,
            peakConcurrency: result.sim.peakConcurrency,
            throttled: result.sim.throttled,
          },
        },
      ]),
    ),
    errors,
  };
}

export function writeResults(outDir: string, results: BenchResults, pictures: Map<string, string>): void {
  mkdirSync(outDir, { recursive: true });
  const json = `${JSON.stringify(results, null, 2)}\n`;
  writeFileSync(join(outDir, 'latest.json'), json);
  writeFileSync(join(outDir, `${results.startedAt.replace(/:/g, '-')}.json`), json);
  writeFileSync(join(outDir, 'latest.md'), renderMarkdown(results));
  for (const [name, svg] of pictures) writeFileSync(join(outDir, name), svg);
}

/** An earlier run's pictures (`latest.svg`, `timeline-*.svg`): removed at a run's start, so none outlives its numbers. */
export function clearPictures(outDir: string): void {
  if (!existsSync(outDir)) return;
  for (const name of readdirSync(outDir))
    if (name === 'latest.svg' || (name.startsWith('timeline-') && name.endsWith('.svg')))
      rmSync(join(outDir, name), { force: true });
}

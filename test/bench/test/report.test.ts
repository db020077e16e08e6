import {
  cpuMicrosPerDevice,
  cycleLatencies,
  internalCeiling,
  kernelCell,
  latencyByMode,
  pipelineCpuMicrosPerDevice,
  usageEach,
  withReplicas,
  type CycleLatency,
} from '../src/report';
import type { ScenarioResult } from '../src/scenario';

const cycle = (mode: CycleLatency['mode'], collectToVmsMs: number): CycleLatency => ({
  scenario: 'any',
  tenantId: 't',
  mode,
  devices: 100,
  collectToVmsMs,
  cycleMs: collectToVmsMs + 1000,
});

describe('latencyByMode', () => {
  it('latencyByMode should take percentiles within each mode only', () => {
    const cycles = [
      ...[100, 200, 300, 400].map((ms) => cycle('per-device', ms)),
      cycle('bulk', 12_000),
      cycle('bulk', 18_000),
    ];
    expect(latencyByMode(cycles)).toEqual({
      'per-device': { cycles: 4, p50Ms: 200, p99Ms: 400 },
      bulk: { cycles: 2, p50Ms: 12_000, p99Ms: 18_000 },
    });
  });

  it('latencyByMode should leave out a mode without cycles', () => {
    expect(latencyByMode([cycle('per-device', 150)])).toEqual({
      'per-device': { cycles: 1, p50Ms: 150, p99Ms: 150 },
    });
  });
});

describe('cycleLatencies', () => {
  const measured = (changedDevices: number | undefined, collectToVmsMs: number) => ({
    tenantId: 't',
    summary: { devices: { total: 100 } },
    summaryAtMs: 10_000,
    cycleStartedAtMs: 1_000,
    collectToVmsMs,
    ...(changedDevices === undefined ? {} : { changedDevices }),
  });
  const scenario = (mode: 'bulk' | 'per-device', cycles: unknown[]): ScenarioResult =>
    ({ spec: { name: 'any', mode }, cycles }) as unknown as ScenarioResult;

  it("cycleLatencies should tell a bulk tenant's next cycles with and without changes from its first", () => {
    const cycles = cycleLatencies([
      scenario('bulk', [measured(undefined, 9_000)]),
      scenario('bulk', [measured(1_000, 700), measured(0, 400)]),
      scenario('per-device', [measured(undefined, 150)]),
    ]);
    expect(cycles.map(({ mode, collectToVmsMs }) => [mode, collectToVmsMs])).toEqual([
      ['bulk', 9_000],
      ['bulk-next', 700],
      ['bulk-same', 400],
      ['per-device', 150],
    ]);
    expect(cycles[1]).toMatchObject({ devices: 100, cycleMs: 9_000 });
  });
});

/** An internal-ceiling run of `devices` devices whose summary came `ms` after its first device batch. */
function internalRun(name: string, devices: number, ms: number, cpuSec: number): ScenarioResult {
  const at = (t: number, n: number): { t: number; n: number } => ({ t, n });
  return {
    spec: { name, mode: 'bulk' },
    cycles: [
      {
        listed: [at(1_000, devices / 2), at(1_500, devices / 2)],
        enriched: [at(2_000, devices)],
        scored: [at(2_500, devices)],
        published: [at(1_000 + ms, devices)],
        summary: { devices: { total: devices } },
        summaryAtMs: 1_000 + ms,
      },
    ],
    devices,
    usage: { scorer: { cpuSec, peakRssMb: 100 } },
    // The scorer, the broker and the simulator in the window: (cpuSec + 2) s over `devices`, the
    // pipeline alone (cpuSec + 1) s.
    windowCpuSec: { scorer: cpuSec, kafka: 1, redis: Number.NaN, simulator: 1 },
    kafka: { 'urs.device-scores': { messages: devices / 500, bytes: devices * 1_500 } },
    redisCalls: { eval: devices / 500 },
  } as unknown as ScenarioResult;
}

describe('internalCeiling', () => {
  it('internalCeiling should report the run at the median with the spread of all runs', () => {
    const ceiling = internalCeiling(
      [
        internalRun('internal-1', 10_000, 4_000, 3),
        internalRun('internal-2', 10_000, 2_000, 1),
        internalRun('internal-3', 10_000, 2_500, 2),
      ],
      true,
    );
    expect(ceiling).toMatchObject({
      scenario: 'internal-3',
      devicesPerSec: 4_000,
      firstBatchToSummaryMs: 2_500,
      cpuSec: { scorer: 2 },
      cpuMicrosPerDevice: 400,
      pipelineCpuMicrosPerDevice: 300,
      devicesPerSecMin: 2_500,
      devicesPerSecMax: 5_000,
      runs: [
        {
          scenario: 'internal-1',
          devicesPerSec: 2_500,
          cpuMicrosPerDevice: 500,
          pipelineCpuMicrosPerDevice: 400,
        },
        {
          scenario: 'internal-2',
          devicesPerSec: 5_000,
          cpuMicrosPerDevice: 300,
          pipelineCpuMicrosPerDevice: 200,
        },
        {
          scenario: 'internal-3',
          devicesPerSec: 4_000,
          cpuMicrosPerDevice: 400,
          pipelineCpuMicrosPerDevice: 300,
        },
      ],
    });
  });

  it('internalCeiling should take the lower middle run of an even number and be null without runs', () => {
    const ceiling = internalCeiling(
      [internalRun('internal-1', 10_000, 2_000, 1), internalRun('internal-2', 10_000, 4_000, 2)],
      true,
    );
    expect(ceiling?.scenario).toBe('internal-2');
    expect(ceiling?.devicesPerSec).toBe(2_500);
    expect(internalCeiling([], true)).toBeNull();
  });

  it('internalCeiling should give Redis commands per device only with a private Redis', () => {
    const run = internalRun('internal-1', 10_000, 2_000, 1);
    expect(internalCeiling([run], false)?.cost.redisCommands).toBeNull();
    expect(internalCeiling([run], true)?.cost.redisCommands).toBe(0);
  });

  it('internalCeiling should count the runs whose cycle was not sound', () => {
    const failed = internalRun('internal-2', 10_000, 500, 1);
    (failed.cycles[0] as { unfetchedDevices?: number }).unfetchedDevices = 10_000;
    const ceiling = internalCeiling([internalRun('internal-1', 10_000, 2_000, 1), failed], true);
    expect(ceiling?.unsoundRuns).toBe(1);
    expect(ceiling?.runs.map((run) => run.completeness.unfetched)).toEqual([0, 10_000]);
  });
});

describe('pipelineCpuMicrosPerDevice', () => {
  it('pipelineCpuMicrosPerDevice should leave the simulator out, and only the simulator', () => {
    const cpuSec = { scorer: 1.5, kafka: 0.5, redis: Number.NaN, simulator: 1 };
    expect(cpuMicrosPerDevice(cpuSec, 10_000)).toBe(300);
    expect(pipelineCpuMicrosPerDevice(cpuSec, 10_000)).toBe(200);
    expect(pipelineCpuMicrosPerDevice({ scorer: 1.5, kafka: 0.5 }, 10_000)).toBe(200);
    expect(pipelineCpuMicrosPerDevice(cpuSec, 0)).toBeNaN();
  });
});

describe('withReplicas', () => {
  it('withReplicas should put the later replicas of a stage right after it, in number order', () => {
    expect(
      withReplicas(
        ['poller', 'vuln-fetcher', 'scorer'],
        ['scorer', 'vuln-fetcher#10', 'vuln-fetcher', 'vuln-fetcher#2', 'kafka'],
      ),
    ).toEqual(['poller', 'vuln-fetcher', 'vuln-fetcher#2', 'vuln-fetcher#10', 'scorer']);
  });
});

describe('kernelCell', () => {
  it('kernelCell should give system seconds, their share of the process and faults per device', () => {
    expect(kernelCell(2, 0.5, 25_000, 50_000)).toBe('0.5 (25 %) · 0.5');
    expect(kernelCell(0, 0, 0, 50_000)).toBe('0 · 0');
    expect(kernelCell(2, 0.5, Number.NaN, 50_000)).toBe('0.5 (25 %)');
    expect(kernelCell(2, 0.5, 100, 0)).toBe('0.5 (25 %)');
  });

  it('kernelCell should give "–" for a process that was not read', () => {
    expect(kernelCell(undefined, undefined, undefined, 1_000)).toBe('–');
    expect(kernelCell(Number.NaN, Number.NaN, Number.NaN, 1_000)).toBe('–');
  });
});

describe('usageEach', () => {
  it('usageEach should round peak RSS to 0.1 MB and CPU to 10 ms, per process', () => {
    const one = (peakRssMb: number, cpuSec: number) => ({
      peakRssMb,
      rssMb: peakRssMb,
      cpuSec,
      systemCpuSec: 0,
      minorFaults: 0,
    });
    const result = { usage: { scorer: one(201.27, 1.456), kafka: one(512.04, 0.004) } };
    expect(usageEach(result, 'peakRssMb')).toEqual({ scorer: 201.3, kafka: 512 });
    expect(usageEach(result, 'cpuSec')).toEqual({ scorer: 1.46, kafka: 0 });
  });
});

import { latencyByMode, type CycleLatency } from '../src/report';

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

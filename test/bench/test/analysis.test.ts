import {
  meanServiceMs,
  percentile,
  perDeviceRefreshHours,
  coresOverTime,
  progress,
  slotUtilisation,
  span,
} from '../src/analysis';
import { sample } from './samples';

describe('percentile', () => {
  it('percentile should take the nearest rank', () => {
    const values = [5, 1, 4, 2, 3, 6, 7, 8, 9, 10];
    expect(percentile(values, 50)).toBe(5);
    expect(percentile(values, 99)).toBe(10);
    expect(percentile(values, 10)).toBe(1);
    expect(percentile([42], 99)).toBe(42);
  });

  it('percentile should be NaN without values', () => {
    expect(percentile([], 50)).toBeNaN();
  });
});

describe('slotUtilisation', () => {
  it('slotUtilisation should divide the achieved call rate by slots over latency', () => {
    // 200 calls between t≈1050 (midpoint of the samples around the first call) and 2050: 200 calls/s;
    // 10 slots at 50 ms can do 200/s.
    const samples = [sample(1000, 0, 0), sample(1100, 20, 10), sample(1600, 110, 10), sample(2100, 200, 0)];
    const result = slotUtilisation(samples, 200, 2050, 50);
    expect(result.startMs).toBe(1050);
    expect(result.windowMs).toBe(1000);
    expect(result.callsPerSec).toBeCloseTo(200);
    expect(result.ceilingPerSec).toBeCloseTo(200);
    expect(result.utilisation).toBeCloseTo(1);
    expect(result.meanInFlight).toBeCloseTo(10);
  });

  it("slotUtilisation should start at the simulator's record of the first call when it has one", () => {
    const samples = [sample(1000, 0, 0), sample(1100, 20, 10), sample(1600, 110, 10), sample(2100, 200, 0)];
    const result = slotUtilisation(samples, 200, 2050, 50, 1012.5);
    expect(result.startMs).toBe(1012.5);
    expect(result.windowMs).toBe(1037.5);
    expect(result.utilisation).toBeCloseTo(1000 / 1037.5);
  });

  it('slotUtilisation should report half use when calls take twice the time', () => {
    const samples = [sample(0, 0, 0), sample(100, 5, 5), sample(2100, 200, 0)];
    expect(slotUtilisation(samples, 200, 2050, 50).utilisation).toBeCloseTo(0.5);
  });

  it('slotUtilisation should count a server slower than configured against the ceiling, not the client', () => {
    // 190 calls/s against 50 ms is 0.95; the server took 52.5 ms per call, so 10 slots could do ~190.5/s.
    const samples = [sample(0, 0, 0), sample(100, 10, 10), sample(2100, 380, 0)];
    const served = { answered: 380, totalMs: 380 * 52.5 };
    expect(slotUtilisation(samples, 380, 2050, 50).utilisation).toBeCloseTo(0.95, 3);
    expect(slotUtilisation(samples, 380, 2050, meanServiceMs(served, 50)).utilisation).toBeCloseTo(0.9975, 3);
  });

  it('meanServiceMs should fall back to the configured latency when nothing was answered', () => {
    expect(meanServiceMs({ answered: 4, totalMs: 202 }, 50)).toBeCloseTo(50.5);
    expect(meanServiceMs({ answered: 0, totalMs: 0 }, 50)).toBe(50);
    expect(meanServiceMs(undefined, 50)).toBe(50);
  });

  it('slotUtilisation should fail when no call was sampled', () => {
    expect(() => slotUtilisation([sample(0, 0, 0)], 0, 10, 50)).toThrow(/no per-device vulnerability call/);
  });
});

describe('perDeviceRefreshHours', () => {
  it('perDeviceRefreshHours should use the window that allows the fewest calls per hour', () => {
    const result = perDeviceRefreshHours(100_000, [
      { limit: 50, windowMs: 60_000 },
      { limit: 1_500, windowMs: 3_600_000 },
    ]);
    expect(result.callsPerHour).toBe(1_500);
    expect(result.hours).toBeCloseTo(66.667, 2);
  });
});

describe('progress', () => {
  it('progress should accumulate items in time order and merge equal times', () => {
    expect(
      progress([
        { t: 30, n: 1 },
        { t: 10, n: 5 },
        { t: 10, n: 2 },
      ]),
    ).toEqual([
      { t: 10, count: 7 },
      { t: 30, count: 8 },
    ]);
  });

  it('progress should thin long curves and keep the last point', () => {
    const events = Array.from({ length: 1000 }, (_, i) => ({ t: i, n: 1 }));
    const curve = progress(events, 100);
    expect(curve.length).toBeLessThanOrEqual(101);
    expect(curve.at(-1)).toEqual({ t: 999, count: 1000 });
  });
});

describe('span', () => {
  it('span should give first, last and the rate between them', () => {
    expect(
      span([
        { t: 1000, n: 500 },
        { t: 2000, n: 500 },
      ]),
    ).toEqual({ firstMs: 1000, lastMs: 2000, items: 1000, perSec: 1000 });
    expect(span([])).toBeNull();
  });
});

describe('coresOverTime', () => {
  it('coresOverTime should give each process its CPU seconds per second of each interval', () => {
    const intervals = coresOverTime([
      { t: 1_000, cpuSec: { scorer: 1, kafka: 10 } },
      { t: 1_500, cpuSec: { scorer: 1.5, kafka: 10.1 } },
      { t: 2_500, cpuSec: { scorer: 1.6, kafka: 10.1, publisher: 0.3 } },
      { t: 2_500, cpuSec: { scorer: 1.7, kafka: 10.2 } },
      { t: 3_500, cpuSec: { scorer: 1.2, kafka: NaN } },
    ]);
    expect(intervals).toHaveLength(3);
    expect(intervals[0]?.t).toBe(1_000);
    expect(intervals[0]?.until).toBe(1_500);
    expect(intervals[0]?.cores['scorer']).toBeCloseTo(1, 6);
    expect(intervals[0]?.cores['kafka']).toBeCloseTo(0.2, 6);
    expect(intervals[1]?.cores['scorer']).toBeCloseTo(0.1, 6);
    // A process seen for the first time (no earlier reading) and a counter that went back or could not be read count 0.
    expect(intervals[1]?.cores['publisher']).toBe(0);
    expect(intervals[2]?.cores).toEqual({ scorer: 0, kafka: 0 });
  });
});

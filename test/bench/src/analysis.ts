import type { StatsSample } from './simulator';

/** Nearest-rank percentile (p in 0..100) of the values; NaN when there are none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

export interface SlotUtilisation {
  /** Per-device vulnerability calls the simulator answered in the window. */
  calls: number;
  /**
   * The first call's arrival at the simulator (its own record), ms epoch; without one, the midpoint between
   * the last sample without and the first with a call.
   */
  startMs: number;
  /** Last response, ms epoch. */
  endMs: number;
  windowMs: number;
  callsPerSec: number;
  /** What `slots` calls in flight at `latencyMs` each could do: slots ÷ latency. */
  ceilingPerSec: number;
  /** callsPerSec ÷ ceilingPerSec. */
  utilisation: number;
  /** Mean calls in flight over the window (from the samples; all call kinds). */
  meanInFlight: number;
}

/**
 * The mean latency the simulator gave a kind of call (arrival to answer, from its service-time counters),
 * or `configuredMs` when it answered none.
 */
export function meanServiceMs(
  served: { answered: number; totalMs: number } | undefined,
  configuredMs: number,
): number {
  return served && served.answered > 0 ? served.totalMs / served.answered : configuredMs;
}

/**
 * Slot utilisation of one cycle: per-device vulnerability calls per second between the first call and
 * the last response, divided by what `slots` calls in flight at `latencyMs` each can do. With the
 * simulator's measured mean latency this is the share of the window in which each slot had a call at the
 * server (Little's law); with the configured latency, timer lateness at the server counts against it too.
 * `endMs` is the last vulnerability response (the cycle's largest `collectedAt`), which the fetcher
 * records exactly; the start is `firstCallAtMs`, the first call's arrival as the simulator recorded it
 * (`firstCallAtByKind`; both ends by `Date.now()`, so a step of the wall clock since the simulator started
 * does not shift the window), or else estimated from its counters, sampled (±half a sampling period: ±0.5 %
 * of a 5 s window at 50 ms).
 */
export function slotUtilisation(
  samples: readonly StatsSample[],
  calls: number,
  endMs: number,
  latencyMs: number,
  firstCallAtMs?: number,
  slots = 10,
): SlotUtilisation {
  const firstWith = samples.findIndex((sample) => sample.vulnerabilities > 0);
  if (firstWith < 0 || calls === 0) throw new Error('no per-device vulnerability call was sampled');
  const first = samples[firstWith] as StatsSample;
  const before = firstWith > 0 ? (samples[firstWith - 1] as StatsSample) : first;
  const startMs = firstCallAtMs ?? (before.t + first.t) / 2;
  const windowMs = Math.max(1, endMs - startMs);
  const callsPerSec = (calls * 1000) / windowMs;
  const ceilingPerSec = latencyMs > 0 ? (slots * 1000) / latencyMs : Infinity;
  const inWindow = samples.filter((sample) => sample.t >= startMs && sample.t <= endMs);
  const meanInFlight =
    inWindow.length > 0 ? inWindow.reduce((sum, sample) => sum + sample.inFlight, 0) / inWindow.length : NaN;
  return {
    calls,
    startMs,
    endMs,
    windowMs,
    callsPerSec,
    ceilingPerSec,
    utilisation: callsPerSec / ceilingPerSec,
    meanInFlight,
  };
}

/**
 * Refresh time of a fleet with one call per device under sliding-window quotas: the binding window is
 * the one that allows the fewest calls per hour.
 */
export function perDeviceRefreshHours(
  devices: number,
  quota: readonly { limit: number; windowMs: number }[],
): { hours: number; callsPerHour: number } {
  const callsPerHour = Math.min(...quota.map((window) => (window.limit * 3_600_000) / window.windowMs));
  return { hours: devices / callsPerHour, callsPerHour };
}

/** A progress curve: at time t (ms epoch), `count` items were done. Sorted by t. */
export type Progress = { t: number; count: number }[];

/** Cumulative progress from (time, items) events, thinned to at most `maxPoints` points. */
export function progress(events: readonly { t: number; n: number }[], maxPoints = 400): Progress {
  const sorted = [...events].sort((a, b) => a.t - b.t);
  const curve: Progress = [];
  let count = 0;
  for (const event of sorted) {
    count += event.n;
    const last = curve.at(-1);
    if (last && last.t === event.t) last.count = count;
    else curve.push({ t: event.t, count });
  }
  if (curve.length <= maxPoints) return curve;
  const step = curve.length / maxPoints;
  const thinned: Progress = [];
  for (let i = 0; i < maxPoints; i++)
    thinned.push(curve[Math.floor(i * step)] as { t: number; count: number });
  thinned.push(curve.at(-1) as { t: number; count: number });
  return thinned;
}

/** First and last time of a set of events, and the rate of items between them. */
export function span(
  events: readonly { t: number; n: number }[],
): { firstMs: number; lastMs: number; items: number; perSec: number } | null {
  if (events.length === 0) return null;
  let firstMs = Infinity;
  let lastMs = -Infinity;
  let items = 0;
  for (const event of events) {
    firstMs = Math.min(firstMs, event.t);
    lastMs = Math.max(lastMs, event.t);
    items += event.n;
  }
  return { firstMs, lastMs, items, perSec: lastMs > firstMs ? (items * 1000) / (lastMs - firstMs) : NaN };
}

export function round(value: number, digits = 0): number {
  if (!Number.isFinite(value)) return value;
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/** Every value of a record rounded to `digits` decimals. */
export function roundEach(values: Record<string, number>, digits: number): Record<string, number> {
  return Object.fromEntries(Object.entries(values).map(([name, value]) => [name, round(value, digits)]));
}

/** CPU time of each process so far (seconds), read at `t` (ms epoch); NaN where a process could not be read. */
export interface CpuSample {
  t: number;
  cpuSec: Record<string, number>;
}

/** The cores each process used from `t` to `until` (ms epoch): its CPU seconds over the interval's seconds. */
export interface CoresInterval {
  t: number;
  until: number;
  cores: Record<string, number>;
}

/**
 * The cores each process used between consecutive samples. A process missing from either sample of an
 * interval (not started yet, or gone) counts 0 there; so does a counter that went backwards.
 */
export function coresOverTime(samples: readonly CpuSample[]): CoresInterval[] {
  const intervals: CoresInterval[] = [];
  for (let i = 1; i < samples.length; i++) {
    const before = samples[i - 1] as CpuSample;
    const after = samples[i] as CpuSample;
    const seconds = (after.t - before.t) / 1000;
    if (seconds <= 0) continue;
    const cores: Record<string, number> = {};
    for (const [name, cpuSec] of Object.entries(after.cpuSec)) {
      const used = (cpuSec - (before.cpuSec[name] ?? NaN)) / seconds;
      cores[name] = Number.isFinite(used) && used > 0 ? used : 0;
    }
    intervals.push({ t: before.t, until: after.t, cores });
  }
  return intervals;
}

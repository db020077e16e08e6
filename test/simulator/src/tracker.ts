import type { ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { emptyStats, type SimStats } from './state';

// Call statistics and in-flight accounting. A request stops being in flight the moment its answer is
// handed over (res.end) or its socket dies, whichever comes first: 'close' alone fires a tick late,
// after a client may already have read the answer and asked for the statistics.

function bump(record: Record<string, number>, key: string): number {
  return (record[key] = (record[key] ?? 0) + 1);
}

export class StatsTracker {
  private stats: SimStats = emptyStats();
  private readonly doneHooks = new WeakMap<ServerResponse, (() => void)[]>();
  /**
   * Each request's arrival: by the monotonic clock for its service time, and by the wall clock (`Date.now()`)
   * for `firstCallAtByKind`, which the bench compares with the pipeline's own `Date.now()` timestamps
   * (`performance.timeOrigin + performance.now()` drifts from it after a step of the wall clock).
   */
  private readonly arrivedAt = new WeakMap<ServerResponse, { monoMs: number; wallMs: number }>();

  /** Marks a request in flight until it is answered or dropped. */
  enter(res: ServerResponse): void {
    const hooks: (() => void)[] = [];
    this.doneHooks.set(res, hooks);
    this.arrivedAt.set(res, { monoMs: performance.now(), wallMs: Date.now() });
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      for (const hook of hooks) hook();
    };
    const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
    res.end = ((...args: unknown[]) => {
      finish();
      return end(...args);
    }) as typeof res.end;
    res.once('close', finish);
    this.stats.inFlight++;
    if (this.stats.inFlight > this.stats.peakConcurrency) this.stats.peakConcurrency = this.stats.inFlight;
    hooks.push(() => this.stats.inFlight--);
  }

  /** Attributes an in-flight request to a tenant (once its tenant is known). */
  enterTenant(res: ServerResponse, tenantId: string): void {
    const now = bump(this.stats.inFlightByTenant, tenantId);
    if (now > (this.stats.peakConcurrencyByTenant[tenantId] ?? 0))
      this.stats.peakConcurrencyByTenant[tenantId] = now;
    this.doneHooks.get(res)?.push(() => {
      this.stats.inFlightByTenant[tenantId] = Math.max(0, (this.stats.inFlightByTenant[tenantId] ?? 1) - 1);
    });
  }

  /**
   * Counts a call of `kind`; with its response, also the time from the request's arrival to its answer
   * (or its socket's end) as that kind's service time.
   */
  call(kind: string, tenantId: string | undefined, res?: ServerResponse): void {
    bump(this.stats.calls, kind);
    if (tenantId) bump((this.stats.callsByTenant[tenantId] ??= {}), kind);
    const arrived = res && this.arrivedAt.get(res);
    this.stats.firstCallAtByKind[kind] ??= arrived === undefined ? Date.now() : arrived.wallMs;
    if (arrived === undefined) return;
    this.doneHooks.get(res as ServerResponse)?.push(() => {
      const served = (this.stats.serviceTimeByKind[kind] ??= { answered: 0, totalMs: 0 });
      served.answered++;
      served.totalMs += performance.now() - arrived.monoMs;
    });
  }

  throttled(tenantId: string): void {
    this.stats.throttled++;
    bump(this.stats.throttledByTenant, tenantId);
  }

  fault(kind: string): void {
    this.stats.faultsInjected++;
    bump(this.stats.faultsByKind, kind);
  }

  snapshot(): SimStats {
    return structuredClone(this.stats);
  }

  /** Zeroes counters and peaks; requests still in flight stay counted so the gauges stay true. */
  reset(): void {
    this.stats = emptyStats(this.stats.inFlight, { ...this.stats.inFlightByTenant });
  }
}

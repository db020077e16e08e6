// Microsoft's documented quotas per application and tenant, per API, enforced as sliding windows.

export type QuotaKind = 'machines' | 'vulnerabilities' | 'bulk' | 'exportFiles';

export interface QuotaLimit {
  perMinute: number;
  perHour: number;
}

/**
 * machines (list and by id) 100/min & 1,500/h; per-device vulnerabilities 50/min & 1,500/h; bulk export
 * 30/min & 1,000/h; the export via files (SoftwareVulnerabilitiesExport) 5/min & 20/h.
 */
export const MDE_QUOTAS: Readonly<Record<QuotaKind, QuotaLimit>> = {
  machines: { perMinute: 100, perHour: 1500 },
  vulnerabilities: { perMinute: 50, perHour: 1500 },
  bulk: { perMinute: 30, perHour: 1000 },
  exportFiles: { perMinute: 5, perHour: 20 },
};

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;

/** Accepted-call timestamps of one app of a tenant and one API, oldest first (at most perHour entries). */
export class SlidingWindow {
  private readonly stamps: number[] = [];
  private head = 0;

  /** `minuteMs`: the length of the per-minute window (see SimulatorOptions.quotaMinuteMs). */
  constructor(
    private readonly limit: QuotaLimit,
    private readonly minuteMs = MINUTE_MS,
  ) {}

  /** Records a call and returns 0, or returns the seconds to wait (Retry-After) without recording. */
  tryAcquire(nowMs: number): number {
    while (this.head < this.stamps.length && (this.stamps[this.head] as number) <= nowMs - HOUR_MS)
      this.head++;
    if (this.head > 4096) {
      this.stamps.splice(0, this.head);
      this.head = 0;
    }
    const inHour = this.stamps.length - this.head;
    if (inHour >= this.limit.perHour) {
      return Math.max(1, Math.ceil(((this.stamps[this.head] as number) + HOUR_MS - nowMs) / 1000));
    }
    if (inHour >= this.limit.perMinute) {
      const oldestInMinute = this.stamps[this.stamps.length - this.limit.perMinute] as number;
      if (oldestInMinute > nowMs - this.minuteMs)
        return Math.max(1, Math.ceil((oldestInMinute + this.minuteMs - nowMs) / 1000));
    }
    this.stamps.push(nowMs);
    return 0;
  }
}

import type { SignalName } from './model-terms';

/**
 * Why a scored device's signal is missing, as its record says it (`missingReasons`): a code from a short,
 * fixed list, never an error's text (that may quote Microsoft's answer). The vulnerability fetch's own
 * codes are kept where they tell VMS something it can act on; every other failure to fetch is one code, so
 * that a tenant whose calls fail one way this cycle and another the next does not republish its devices.
 *
 * - `NOT_REPORTED`: the device list gave no value the model reads (absent, empty or `Unknown`, or a value the
 *   model does not know, such as a new enum value; for inactivity, a `lastSeen` absent or unreadable).
 * - `EXCLUDED`: the device is excluded from vulnerability management (`isExcluded`): no CVE list is kept.
 * - `NOT_IN_EXPORT_SNAPSHOT`: bulk mode, the device was first seen too recently for the export's snapshot
 *   to hold its assessment; a later snapshot brings it.
 * - `DEFENDER_NOT_FOUND`: Microsoft answered 404 for the device's vulnerabilities (removed since it was
 *   listed, or unknown to vulnerability management).
 * - `DEFENDER_UNREADABLE_RECORDS`: the device's vulnerabilities were answered, none of them readable.
 * - `FETCH_FAILED`: the vulnerabilities could not be fetched (Defender unavailable, throttled, sign-in or
 *   consent refused, the bulk export failed or never came, a fault of the pipeline).
 * - `CVSS_THRESHOLD_CHANGED`: the vulnerabilities were fetched, their critical CVEs counted at the CVSS
 *   threshold the cycle started with, and the profile that scores the device counts at another (the tenant
 *   changed its threshold during the cycle, and the profile the cycle started with is no longer held): the
 *   count is not scored with a profile it was not made for. The next cycle counts at the new threshold.
 * - `UNKNOWN`: none given (an enriched batch of an older vuln-fetcher).
 */
export const MISSING_REASONS = [
  'NOT_REPORTED',
  'EXCLUDED',
  'NOT_IN_EXPORT_SNAPSHOT',
  'DEFENDER_NOT_FOUND',
  'DEFENDER_UNREADABLE_RECORDS',
  'FETCH_FAILED',
  'CVSS_THRESHOLD_CHANGED',
  'UNKNOWN',
] as const;
export type MissingReason = (typeof MISSING_REASONS)[number];

/** The fetch error codes a record keeps as they are; any other is `FETCH_FAILED`. */
const KEPT_FETCH_CODES: ReadonlySet<string> = new Set<MissingReason>([
  'EXCLUDED',
  'NOT_IN_EXPORT_SNAPSHOT',
  'DEFENDER_NOT_FOUND',
  'DEFENDER_UNREADABLE_RECORDS',
]);

/** Why a device's vulnerabilities are missing, from the enriched device's `fetchError` (its code only). */
export function vulnerabilitiesMissingReason(fetchError: { code: string } | undefined): MissingReason {
  if (fetchError === undefined) return 'UNKNOWN';
  return KEPT_FETCH_CODES.has(fetchError.code) ? (fetchError.code as MissingReason) : 'FETCH_FAILED';
}

/** The signal whose value comes from the device's vulnerabilities; every other one from the device list. */
const VULNERABILITY_SIGNAL: SignalName = 'criticalCves';

/**
 * Each missing signal's reason, or undefined when none is missing (most devices: nothing is built for them).
 * `fetchError` is the enriched device's, read only when criticalCves is missing.
 */
export function missingReasonsOf(
  missing: readonly SignalName[],
  fetchError: { code: string } | undefined,
): Partial<Record<SignalName, MissingReason>> | undefined {
  if (missing.length === 0) return undefined;
  const reasons: Partial<Record<SignalName, MissingReason>> = {};
  for (const signal of missing) {
    reasons[signal] =
      signal === VULNERABILITY_SIGNAL ? vulnerabilitiesMissingReason(fetchError) : 'NOT_REPORTED';
  }
  return reasons;
}

import { parseTimestampMs } from '@urs/contracts';

// Fields of Microsoft's records sent in a shape it does not document: what the score reads of a device becomes
// missing (or text), and what nothing scores becomes null, so that one odd field never costs a whole record.

/**
 * The machine's text fields the score reads (see `scoreDevice` in @urs/scoring) whose unknown text it scores
 * as missing: a number or boolean sent there may become its text.
 */
const SIGNAL_TEXT_FIELDS = ['riskScore', 'exposureLevel', 'defenderAvStatus', 'healthStatus'] as const;
/**
 * The scored text fields whose unknown text is not missing: an onboardingStatus other than the model's known
 * values scores NotOnboarded (a new status of Microsoft's is no onboarded device), so a number or boolean there
 * (`1`, `true`) becomes null, not text that would score it so.
 */
const SIGNAL_TEXT_ONLY_FIELDS = ['onboardingStatus'] as const;
const DATE_FIELDS = ['firstSeen', 'lastSeen'] as const;

/**
 * A scored signal sent in a shape Microsoft does not document costs its signal, not the device: the model
 * scores it as missing. So a number or boolean becomes its text where the model scores unknown text as missing
 * (and shows it as observed), null where it would not (`onboardingStatus`), any other non-text value null,
 * and a date the model cannot read (`parseTimestampMs`, the one reading of `lastSeen` and `firstSeen`) null
 * (inactivity missing); the device is listed and scored, where failing the record would leave it out of the
 * fleet (and tombstone it after a few cycles).
 */
export function softenSignals(record: Record<string, unknown>): void {
  for (const field of SIGNAL_TEXT_FIELDS) {
    const value = record[field];
    if (value === undefined || value === null || typeof value === 'string') continue;
    record[field] = typeof value === 'number' || typeof value === 'boolean' ? String(value) : null;
  }
  for (const field of SIGNAL_TEXT_ONLY_FIELDS) {
    const value = record[field];
    if (value !== undefined && value !== null && typeof value !== 'string') record[field] = null;
  }
  for (const field of DATE_FIELDS) {
    const value = record[field];
    if (
      value !== undefined &&
      value !== null &&
      (typeof value !== 'string' || Number.isNaN(parseTimestampMs(value)))
    )
      record[field] = null;
  }
}

/** The documented shape of a field nothing scores. */
export type FieldShape = 'string' | 'boolean' | 'number' | 'string[]';

/** Whether `value` has `shape`; null and absent always do. */
function hasShape(value: unknown, shape: FieldShape): boolean {
  if (value === undefined || value === null) return true;
  if (shape === 'string[]') return Array.isArray(value) && value.every((item) => typeof item === 'string');
  return typeof value === shape;
}

/**
 * The fields of a vulnerability nothing scores (the score reads its CVE id and cvssV3 only), and their
 * documented shapes. One sent in another shape (`epss: "0.97"`) becomes null: failing the record would drop
 * the CVE and undercount the device's critical CVEs over a field that weighs nothing.
 */
export const VULNERABILITY_UNSCORED: ReadonlyArray<readonly [string, FieldShape]> = [
  ['name', 'string'],
  ['severity', 'string'],
  ['publicExploit', 'boolean'],
  ['exploitVerified', 'boolean'],
  ['exploitInKit', 'boolean'],
  ['exploitTypes', 'string[]'],
  ['epss', 'number'],
];

/** The same for a bulk export row (the score reads its device id, CVE id and cvssScore only). */
export const BULK_UNSCORED: ReadonlyArray<readonly [string, FieldShape]> = [
  ['vulnerabilitySeverityLevel', 'string'],
  ['exploitabilityLevel', 'string'],
];

/** Nulls each of `fields` whose value has another shape than documented. */
export function softenUnscored(
  record: Record<string, unknown>,
  fields: ReadonlyArray<readonly [string, FieldShape]>,
): void {
  for (const [field, shape] of fields) if (!hasShape(record[field], shape)) record[field] = null;
}

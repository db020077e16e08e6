import { vulnerabilitiesNotHeld } from './device-record';
import { parseTimestampMs } from './time';
import type { DeviceRecord } from './types';

// Which devices a bulk export's snapshot can list, and what a device of a bulk cycle goes on with: Microsoft
// regenerates the export every 6 hours and serves the latest snapshot, so a device onboarded since it was
// generated is not in it, whatever its vulnerabilities; nor, for hours after its onboarding, is a device
// Microsoft has not assessed yet. One rule for the vuln-fetcher and `urs defender devices`.

/** The fetch error code of a device the export's snapshot cannot list yet. */
export const NOT_IN_EXPORT_SNAPSHOT = 'NOT_IN_EXPORT_SNAPSHOT';

/** The code of a device the export lists only in rows none of which could be read (the Defender client's). */
const UNREADABLE_RECORDS = 'DEFENDER_UNREADABLE_RECORDS';

/** The snapshot an export was read from: its `generatedTime` when it was known, and when it was read. */
export interface ExportSnapshot {
  generatedTime?: string | undefined;
  collectedAt: string | Date;
}

/**
 * How old the snapshot an export was read from may be when its `generatedTime` is not known: Microsoft
 * regenerates it every 6 hours; an hour more covers the generation itself and a long read.
 */
const SNAPSHOT_MAX_AGE_MS = 7 * 60 * 60_000;

/** When the snapshot was generated (epoch ms): without its `generatedTime`, the oldest it can be. */
export function generatedAt(snapshot: ExportSnapshot): number {
  return snapshot.generatedTime === undefined
    ? new Date(snapshot.collectedAt).getTime() - SNAPSHOT_MAX_AGE_MS
    : Date.parse(snapshot.generatedTime);
}

/**
 * How long before a snapshot's generation a device must have been first seen for the snapshot's silence about
 * it to mean no vulnerability. Microsoft's first vulnerability assessment of a newly onboarded device takes
 * hours, and the snapshot generated meanwhile lists none of its rows: taken as listed, a device first seen an
 * hour before the snapshot would look clean (0 critical CVEs) until the next one, 6 to 12 hours on. A day
 * covers that assessment with room to spare; a device within it is passed on as not in the snapshot (its
 * criticalCves missing) and the next snapshot settles it.
 */
export const ASSESSMENT_MARGIN_MS = 24 * 60 * 60_000;

/**
 * Whether the snapshot could list a device first seen at `firstSeen` (read as `lastSeen` is,
 * `parseTimestampMs`): first seen at least ASSESSMENT_MARGIN_MS before it was generated. A device without a
 * readable `firstSeen` is taken for one the snapshot knew.
 */
export function listedBy(firstSeen: DeviceRecord['firstSeen'], snapshot: ExportSnapshot): boolean {
  const seen = typeof firstSeen === 'string' ? parseTimestampMs(firstSeen) : NaN;
  return !(seen + ASSESSMENT_MARGIN_MS > generatedAt(snapshot));
}

/** What a device of a bulk cycle goes on with: its vulnerabilities, or none and why (a fetch error's code). */
export type ExportedVulnerabilities<T> =
  | { vulnerabilities: T; code?: undefined }
  | {
      vulnerabilities: null;
      code: 'EXCLUDED' | typeof UNREADABLE_RECORDS | typeof NOT_IN_EXPORT_SNAPSHOT;
    };

/**
 * A device of a bulk cycle as the export gives it, whatever form the caller keeps a device's vulnerabilities
 * in (the vuln-fetcher's summaries, `urs defender devices`' lists). `listed` is what the export holds of the
 * device: its vulnerabilities, null when it lists the device only in rows none of which could be read (none
 * known, as per device), undefined when it does not list it. A device excluded from vulnerability management
 * has none whatever the export says (`vulnerabilitiesNotHeld`). A device the export does not list has no
 * vulnerability (`none()`) if the snapshot could list it (`listedBy`); one first seen after the snapshot was
 * generated, or less than a day before, may not be in it: its criticalCves is missing until a snapshot that
 * can list it.
 */
export function fromExportSnapshot<T>(
  machine: Pick<DeviceRecord, 'isExcluded' | 'firstSeen'>,
  listed: T | null | undefined,
  snapshot: ExportSnapshot,
  none: () => T,
): ExportedVulnerabilities<T> {
  const notHeld = vulnerabilitiesNotHeld(machine);
  if (notHeld !== null) return { vulnerabilities: null, code: notHeld };
  if (listed === null) return { vulnerabilities: null, code: UNREADABLE_RECORDS };
  if (listed !== undefined) return { vulnerabilities: listed };
  if (listedBy(machine.firstSeen, snapshot)) return { vulnerabilities: none() };
  return { vulnerabilities: null, code: NOT_IN_EXPORT_SNAPSHOT };
}

import type { DeviceRecord } from '@urs/contracts';

// Which devices an export's snapshot can list: Microsoft regenerates the export every 6 hours and serves
// the latest snapshot, so a device onboarded since it was generated is not in it, whatever its
// vulnerabilities; nor, for hours after its onboarding, is a device Microsoft has not assessed yet.

/** The fetch error of a device the export's snapshot cannot list yet. */
export const NOT_IN_EXPORT_SNAPSHOT = 'NOT_IN_EXPORT_SNAPSHOT';

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
 * Whether the snapshot could list a device first seen at `firstSeen`: first seen at least ASSESSMENT_MARGIN_MS
 * before it was generated. A device without a readable `firstSeen` is taken for one the snapshot knew.
 */
export function listedBy(firstSeen: DeviceRecord['firstSeen'], snapshot: ExportSnapshot): boolean {
  const seen = typeof firstSeen === 'string' ? Date.parse(firstSeen) : NaN;
  return !(seen + ASSESSMENT_MARGIN_MS > generatedAt(snapshot));
}

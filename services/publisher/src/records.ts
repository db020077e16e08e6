import { BANDS, type Band, type ScoreBatch, type ScoredDevice } from '@urs/contracts';

/** What the publisher records of each scored batch (once per batch index) to build the cycle's summary. */
export interface BatchStats {
  devices: number;
  bands: Record<Band, number>;
  /** Devices scored with at least one missing signal. */
  incomplete: number;
  collectedAt: string;
  scoredAt: string;
  /** Device records published for this batch because their score or band changed. */
  changed: number;
  /**
   * The cycle's batches as its last batch says (the poller's, plus the vuln-fetcher's corrections after it):
   * what a correction batch completes the cycle by when the poller's listing is missing.
   */
  totalBatches?: number;
}

export function emptyBands(): Record<Band, number> {
  return Object.fromEntries(BANDS.map((band) => [band, 0])) as Record<Band, number>;
}

/**
 * A correction batch (`replaces`) counts no device of its own: it moves its devices from the bands they
 * were counted in to their new ones, so its band and incomplete counts may be negative.
 */
export function batchStats(batch: ScoreBatch, changed: number): BatchStats {
  const bands = emptyBands();
  let incomplete = 0;
  for (const device of batch.devices) {
    bands[device.band] += 1;
    if (device.missing.length > 0) incomplete += 1;
  }
  if (batch.replaces) {
    for (const [band, count] of Object.entries(batch.replaces.bands)) bands[band as Band] -= count;
    incomplete -= batch.replaces.incomplete;
  }
  return {
    devices: batch.replaces ? 0 : batch.devices.length,
    bands,
    incomplete,
    collectedAt: batch.collectedAt,
    scoredAt: batch.scoredAt,
    changed,
    ...(batch.totalBatches === undefined ? {} : { totalBatches: batch.totalBatches }),
  };
}

/**
 * A digest of what a device's record says besides its score and band: the identity VMS enforces on (the
 * device's names, addresses, tags and group) and the explanation (the profile used, each indicator's level
 * and points, the missing signals and why each is missing). A device whose addresses change keeps its score,
 * and VMS would otherwise keep enforcing on the old ones until the next snapshot (up to 24 cycles); one whose
 * signal went missing, or is missing for another reason (not yet in the export's snapshot, then failing to be
 * fetched), whose level changed to one worth the same points, or whose tenant changed its profile, would keep
 * explaining its score by what no longer holds. A reason is one of a few codes, every fetch failure one of
 * them, so a tenant whose calls fail one way and then another is not published again for it. Signal values
 * that move within their indicator (lastSeen, a CVE count: a contribution's number) are not in it: they would
 * send every device every cycle. 53 bits of two 32-bit FNV-1a passes over the fields (each ended by a
 * separator no text holds),
 * in base 36: a missed change by collision is ~1 in 10^16. Hashed field by field, without building their text.
 */
export function recordDigest(device: ScoredDevice): string {
  const hash = { low: 0x811c9dc5, high: 0x01000193 };
  mix(hash, device.computerDnsName);
  mix(hash, device.aadDeviceId);
  mix(hash, device.lastIpAddress);
  mix(hash, device.lastExternalIpAddress);
  for (const address of device.ipAddresses) {
    mix(hash, address.ipAddress ?? null);
    mix(hash, address.macAddress ?? null);
    mix(hash, address.type ?? null);
    mix(hash, address.operationalStatus ?? null);
  }
  mix(hash, null);
  for (const tag of device.machineTags) mix(hash, tag);
  mix(hash, null);
  mix(hash, device.rbacGroupName);
  mix(hash, device.profileHash);
  for (const contribution of device.contributions) {
    mix(hash, contribution.signal);
    // A level (exposureLevel's Medium, inactivity's 1to3d): two of a profile may be worth the same points.
    mix(hash, typeof contribution.value === 'string' ? contribution.value : null);
    mix(hash, String(contribution.points));
  }
  mix(hash, null);
  for (const signal of device.missing) mix(hash, signal);
  // Why each is missing, in the order of `missing`. Left out when there are none (nothing missing, or an older
  // scorer's record), so a device missing nothing keeps the digest it had before the reasons were kept.
  const reasons = device.missingReasons;
  if (reasons !== undefined) {
    mix(hash, null);
    for (const signal of device.missing) mix(hash, reasons[signal] ?? null);
  }
  return (((hash.high >>> 0) % 0x200000) * 0x100000000 + (hash.low >>> 0)).toString(36);
}

/** Adds a field's text and a separator (a code no UTF-16 text holds alone: 0xffff) to both hashes. */
function mix(hash: { low: number; high: number }, text: string | null): void {
  let { low, high } = hash;
  if (text !== null) {
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      low = Math.imul(low ^ code, 0x01000193);
      high = Math.imul(high ^ code, 0x0100019d);
    }
  }
  hash.low = Math.imul(low ^ 0xffff, 0x01000193);
  hash.high = Math.imul(high ^ 0xffff, 0x0100019d);
}

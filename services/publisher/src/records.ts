import { BANDS, type Band, type ScoreBatch } from '@urs/contracts';

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
  };
}

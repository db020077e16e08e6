import {
  vulnerabilitiesNotHeld,
  type DeviceBatch,
  type ExportSnapshot,
  type DeviceRecord,
  type EnrichedDevice,
  type VulnerabilitySummary,
} from '@urs/contracts';
import { DefenderErrorCode } from '@urs/defender';

// What enriching a batch gives the handler to send, whichever mode made it.

export type FetchError = { code: string; message: string };

/**
 * What a bulk cycle's own export corrects, compared with the tenant's latest export its earlier batches
 * were enriched from: the devices whose summary it changed (their ids: see `changedDevices`), their
 * summaries in it, looked up a batch at a time as the corrections are sent, and its snapshot, which may
 * list devices the latest one's could not (see `listedSince`).
 */
export interface Corrections {
  changed: string[];
  /**
   * These devices' summaries in the cycle's own export: null for one it lists only in rows that could not
   * be read, absent (undefined) for one it does not list.
   */
  summaries(deviceIds: string[]): Promise<Map<string, VulnerabilitySummary | null | undefined>>;
  snapshot: ExportSnapshot;
}

export interface Enrichment {
  devices: EnrichedDevice[];
  collectedAt: Date;
  /** A bulk cycle's last batch that brings the cycle's own export: the corrections that follow it. */
  corrections?: Corrections;
  /** What is left to do once the batch and its corrections are produced (store the export). */
  afterSend?: () => Promise<void>;
  /**
   * A bulk cycle's last batch that found the tenant's latest export's snapshot unchanged: that export's
   * cycle, kept as the latest instead of the cycle's own (which was not read).
   */
  unchangedFrom?: string;
  /**
   * Per device, the devices no call was made for, by their outcome in `urs_vulnerability_fetches_total`
   * (`not-held`, `reused`, `skipped`): counted once the batch is recorded enriched, so that the tries of a
   * batch held (Kafka down) do not count them once each. In bulk no call is made per device: the handler
   * counts every device (`bulkFetchOutcomes`) at the same point.
   */
  unasked?: ReadonlyMap<string, number>;
}

/** An enrichment that may have met a failure of the tenant as a whole (credentials, consent, an outage). */
export type TenantEnrichment = Enrichment & { tenantFailure?: FetchError };

/**
 * The devices gone on without vulnerabilities, with the reason: `error`, but for a device whose
 * vulnerabilities Microsoft does not hold (`notHeld`), which keeps that reason whatever failed.
 */
export const missing = (machines: DeviceRecord[], error: FetchError): EnrichedDevice[] =>
  machines.map((machine) => ({ machine, vulnerabilities: null, fetchError: notHeld(machine) ?? error }));

/**
 * A bulk batch gone on without its export, which failed, never came, or was not asked for after its tenant
 * failed as a whole (`error`): each device `missing`, collected `at`.
 */
export const withoutExport = (batch: DeviceBatch, error: FetchError, at: Date): Enrichment => ({
  devices: missing(batch.devices, error),
  collectedAt: at,
});

/**
 * Why a device's vulnerabilities are not asked for, in either mode: Microsoft holds none of them
 * (`vulnerabilitiesNotHeld`: excluded from vulnerability management). Its criticalCves is missing, as for a call that failed.
 */
export function notHeld(machine: DeviceRecord): FetchError | undefined {
  const reason = vulnerabilitiesNotHeld(machine);
  if (reason === null) return undefined;
  return {
    code: reason,
    message:
      'the device is excluded from vulnerability management (isExcluded): its empty vulnerability list ' +
      'is no observation',
  };
}

/**
 * Why a device none of whose CVE rows in the bulk export could be read has no vulnerabilities (its summary
 * null, stored as the JSON `null`), whether or not it also has readable rows of installed software without a
 * CVE: the per-device path's code for a device none of whose vulnerabilities could be read. Its criticalCves is
 * missing, not 0.
 */
export function unreadableInExport(): FetchError {
  return {
    code: DefenderErrorCode.UNREADABLE_RECORDS,
    message:
      'none of its CVE rows in the bulk export could be read (urs_vulnerability_rows_unreadable_total): ' +
      'its critical CVEs are not known',
  };
}

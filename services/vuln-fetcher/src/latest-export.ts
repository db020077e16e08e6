import type { DeviceBatch, TenantRecord } from '@urs/contracts';
import type { LatestExport } from '@urs/store';

// Which latest export a bulk cycle's batches may be enriched from, before their own export is read.

/** The app a tenant's batch is handled with: its Entra directory and cloud name the Defender read. */
export type ExportApp = Pick<TenantRecord['defender'], 'azureTenantId' | 'cloud'>;

/**
 * The tenant's latest export if the batch may be enriched from it: another cycle's, counted at the
 * batch's CVSS threshold (after a change of threshold the cycle reads its own export first, instead of
 * correcting every device with a CVE), and read with an app of the Entra directory and cloud the batch is
 * handled with. After the tenant's app moved to another directory or cloud (the registrar allows it, and a
 * tenant deleted and registered again under its id may name another app) the latest export is another
 * Defender's: none of the tenant's devices is in it, and each would go on with no vulnerabilities. A
 * latest kept without them (by an earlier version) is not used either: the cycle reads its own export
 * first, once.
 */
export function usable<T extends LatestExport>(
  batch: DeviceBatch,
  app: ExportApp,
  latest: T | null,
): T | null {
  if (latest === null || latest.cycleId === batch.cycleId) return null;
  if (latest.cvssThreshold !== batch.cvssThreshold) return null;
  const sameApp = latest.azureTenantId === app.azureTenantId.toLowerCase() && latest.cloud === app.cloud;
  return sameApp ? latest : null;
}

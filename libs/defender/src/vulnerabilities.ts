import type { Logger } from '@urs/logging';
import { DefenderError, DefenderErrorCode } from './errors';
import { odataValue } from './answers';
import type { ApiCaller, RowsScan } from './http';
import type { ODataSink } from './odata-rows';
import { type InvalidRecord, lostPage } from './machines';
import { readHalvingOnTimeout } from './page-halving';
import { MICROSOFT_QUOTAS, type QuotaWindow } from './quota';
import { BulkRowReader, type BulkRowEntry, bulkRowEntry } from './bulk-rows';
import { parseVulnerability, type Vulnerability } from './schema';

/** Largest `pageSize` of `SoftwareVulnerabilitiesByMachine`. */
export const MAX_BULK_PAGE_SIZE = 200_000;
/** Microsoft's default `pageSize` of the bulk export; about 1 KB per row, so ~50 MB of JSON per page. */
export const DEFAULT_BULK_PAGE_SIZE = 50_000;
/**
 * Smallest `pageSize` a bulk page cut at its call slot's end is asked again with (see BulkOptions.pageSize):
 * ~5 MB, which a link of ~1 Mbit/s brings within a slot.
 */
export const MIN_HALVED_BULK_PAGE_SIZE = 5_000;

export interface VulnerabilityDeps {
  api: ApiCaller;
  logger: Logger;
  azureTenantId: string;
  onInvalidRecord?: (record: InvalidRecord) => void;
}

/**
 * The next link of a page, unless it is one the read has followed already: an API answering a page with
 * its own link (or a cycle of them) would keep the read going for ever. `followed` holds the links so far.
 */
function freshNextLink(
  body: unknown,
  followed: Set<string>,
  path: string,
  azureTenantId: string,
): string | undefined {
  const next = nextLinkOf(body);
  if (next === undefined) return undefined;
  if (followed.has(next)) {
    throw new DefenderError(
      DefenderErrorCode.MALFORMED_RESPONSE,
      `The Defender API answered ${path} with a next link it had given before (page ${followed.size + 1}): the read is tried again rather than run in a circle`,
      { canRetry: true, details: { azureTenantId, path } },
    );
  }
  followed.add(next);
  return next;
}

function nextLinkOf(body: unknown): string | undefined {
  const link = (body as Record<string, unknown> | null)?.['@odata.nextLink'];
  return typeof link === 'string' && link !== '' ? link : undefined;
}

/** Keeps one entry per CVE id (the highest CVSS when a CVE comes with several products). */
export function mergeVulnerability(
  list: Vulnerability[],
  index: Map<string, number>,
  vulnerability: Vulnerability,
): void {
  const at = index.get(vulnerability.id);
  if (at === undefined) {
    index.set(vulnerability.id, list.length);
    list.push(vulnerability);
    return;
  }
  const existing = list[at];
  if (existing && (vulnerability.cvssV3 ?? -1) > (existing.cvssV3 ?? -1)) list[at] = vulnerability;
}

/**
 * `GET /api/machines/{id}/vulnerabilities` (50 calls/min and 1,500/h per tenant). A device unknown to the
 * API (removed since it was listed) throws NOT_FOUND; invalid entries are reported and skipped, and a device
 * whose entries were all skipped throws UNREADABLE_RECORDS: an empty list would say it has no CVE.
 */
export async function fetchMachineVulnerabilities(
  deps: VulnerabilityDeps,
  machineId: string,
  signal?: AbortSignal,
): Promise<Vulnerability[]> {
  const path = `/api/machines/${encodeURIComponent(machineId)}/vulnerabilities`;
  const list: Vulnerability[] = [];
  const index = new Map<string, number>();
  let next: string | undefined = path;
  const followed = new Set<string>([path]);
  let skipped = 0;
  // The endpoint documents no paging; a next link is followed anyway, should one ever come.
  while (next) {
    const result = await deps.api.get('vulnerabilities', next, undefined, signal);
    if (result.status === 404) {
      throw new DefenderError(
        DefenderErrorCode.NOT_FOUND,
        `Device ${machineId} is not known to the Defender API of tenant ${deps.azureTenantId} (404)`,
        {
          details: { azureTenantId: deps.azureTenantId, machineId },
        },
      );
    }
    for (const item of odataValue(result.body, path, deps.azureTenantId)) {
      const parsed = parseVulnerability(item);
      if (!parsed.ok) {
        const invalid: InvalidRecord = { kind: 'vulnerability', reason: parsed.reason, machineId };
        deps.logger.warn('defender: skipped an invalid vulnerability', {
          azureTenantId: deps.azureTenantId,
          ...invalid,
        });
        deps.onInvalidRecord?.(invalid);
        skipped++;
        continue;
      }
      mergeVulnerability(list, index, parsed.value);
    }
    next = freshNextLink(result.body, followed, path, deps.azureTenantId);
  }
  if (skipped > 0 && list.length === 0) {
    throw new DefenderError(
      DefenderErrorCode.UNREADABLE_RECORDS,
      `None of the ${skipped} vulnerabilities the Defender API gave for device ${machineId} could be read: its critical CVEs are not known`,
      { details: { azureTenantId: deps.azureTenantId, machineId, skipped } },
    );
  }
  return list;
}

/**
 * One device's row of the bulk export: its CVE, undefined for a row of software without one, or null for a
 * row skipped as invalid (reported as such), which says the device had a row whose CVE is not known.
 */
export type BulkRowHandler = (deviceId: string, vulnerability: Vulnerability | undefined | null) => void;

/** What one read of the bulk export went through. */
export interface BulkExportRead {
  /** Pages read (one call each, retries not counted). */
  pages: number;
  /** Rows handed out (a retried page's rows again). */
  rows: number;
  /** Rows skipped as invalid (reported through `onInvalidRecord` and the log). */
  invalid: number;
}

function validBulkPageSize(pageSize = DEFAULT_BULK_PAGE_SIZE): number {
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_BULK_PAGE_SIZE) {
    throw new DefenderError(
      DefenderErrorCode.INVALID_CONFIG,
      `pageSize must be a whole number from 1 to ${MAX_BULK_PAGE_SIZE} (got ${pageSize})`,
    );
  }
  return pageSize;
}

export interface BulkOptions {
  /**
   * Rows per page, 1–200,000. Default 50,000 (~50 MB). A page cut at its call slot's end (~a minute: below
   * ~7 Mbit/s for 50,000 rows) is asked for again at once, from the same position, with half the rows, not
   * below MIN_HALVED_BULK_PAGE_SIZE, and the rest of the read keeps the smaller page; one of
   * MIN_HALVED_BULK_PAGE_SIZE rows or fewer is retried as any call is. Otherwise every attempt would be cut
   * alike, each holding a shared slot for a minute and a call of the quota, and the export never be read.
   */
  pageSize?: number;
  signal?: AbortSignal;
}

/**
 * `GET /api/machines/SoftwareVulnerabilitiesByMachine` (30 calls/min and 1,000/h), following
 * `@odata.nextLink` (it carries `$skiptoken`; `$top` would suppress it, so only `pageSize` is sent).
 * Each valid row goes to `onRow` as soon as it is read (an invalid one naming its device, as null), and nothing of a page is kept here: a page is
 * ~50,000 rows, and rows held until their page ends outlive the young generation, so only full marks
 * of the heap could free them. The export gives no order, so a device's rows may come on several pages
 * and the same CVE on several rows (one per product). A page that fails midway and is retried gives its
 * rows again: `onRow` must be idempotent.
 */
export async function readVulnerabilitiesByMachine(
  deps: VulnerabilityDeps,
  onRow: BulkRowHandler,
  options: BulkOptions = {},
): Promise<BulkExportRead> {
  const pageSize = validBulkPageSize(options.pageSize);
  const read: BulkExportRead = { pages: 0, rows: 0, invalid: 0 };
  const entry = (row: BulkRowEntry): void => {
    if ('invalid' in row) {
      read.invalid++;
      reportInvalidRow(deps, row.invalid);
      if (row.deviceId !== undefined) onRow(row.deviceId, null);
      return;
    }
    read.rows++;
    onRow(row.deviceId, row.vulnerability);
  };
  const reader = new BulkRowReader();
  // Rows of the usual shape are read straight from their bytes; the others are parsed and checked whole.
  read.pages = await walkExportPages(deps, pageSize, (next, params, onTimeout) =>
    deps.api.scanRows('bulk', next, params, entry, bulkRowEntry, options.signal, reader, onTimeout),
  );
  return read;
}

/** The whole bulk export merged per device, and the rows skipped as invalid. */
export interface VulnerabilitiesByMachine {
  /** Per device its CVEs (one entry per CVE id, its highest CVSS). */
  devices: Map<string, Vulnerability[] | null>;
  /** Rows skipped as invalid (each reported through `onInvalidRecord` and the log). */
  invalid: number;
}

/** `readVulnerabilitiesByMachine` merged per device (CVE-deduplicated). */
export async function vulnerabilitiesByMachine(
  deps: VulnerabilityDeps,
  options: BulkOptions = {},
): Promise<VulnerabilitiesByMachine> {
  // Per device, its CVEs in first-seen order and where each one is in that list.
  const merged = new Map<string, { list: Vulnerability[]; index: Map<string, number> }>();
  // The devices with a row that could not be read: null unless a CVE row of theirs could (as per device, a
  // device whose CVEs were all skipped has unknown CVEs, not none; a row of installed software without a
  // CVE says nothing of them).
  const unreadable = new Set<string>();
  const read = await readVulnerabilitiesByMachine(
    deps,
    (machineId, vulnerability) => {
      let device = merged.get(machineId);
      if (!device) merged.set(machineId, (device = { list: [], index: new Map() }));
      if (vulnerability === null) unreadable.add(machineId);
      else if (vulnerability) mergeVulnerability(device.list, device.index, vulnerability);
    },
    options,
  );
  return {
    devices: new Map(
      [...merged].map(([machineId, { list }]) => [
        machineId,
        list.length === 0 && unreadable.has(machineId) ? null : list,
      ]),
    ),
    invalid: read.invalid,
  };
}

/** An export row skipped as invalid: logged, and handed to `onInvalidRecord`. */
function reportInvalidRow(deps: VulnerabilityDeps, reason: string): void {
  const invalid: InvalidRecord = { kind: 'bulk-row', reason };
  deps.logger.warn('defender: skipped an invalid export row', {
    azureTenantId: deps.azureTenantId,
    ...invalid,
  });
  deps.onInvalidRecord?.(invalid);
}

/**
 * `readVulnerabilitiesByMachine` with the rows left to a sink of the caller's (a new one per call and
 * retry, from `sink`): it reads each page's bytes as they arrive, on another thread if it likes, and
 * gives each row it skips as invalid to `reportInvalid` (logged and reported as here). Resolves with the
 * pages read.
 */
export async function scanVulnerabilitiesByMachine(
  deps: VulnerabilityDeps,
  sink: (reportInvalid: (reason: string) => void) => ODataSink,
  options: BulkOptions = {},
): Promise<{ pages: number }> {
  const reportInvalid = (reason: string): void => reportInvalidRow(deps, reason);
  const pages = await walkExportPages(deps, validBulkPageSize(options.pageSize), (next, params, onTimeout) =>
    deps.api.scanInto('bulk', next, params, () => sink(reportInvalid), options.signal, onTimeout),
  );
  return { pages };
}

/** The export's first page answered 404: nothing to read, which is not the same as no CVEs. */
function noExport(path: string, azureTenantId: string): DefenderError {
  return new DefenderError(
    DefenderErrorCode.UNAVAILABLE,
    `The Defender API answered 404 for ${path} of tenant ${azureTenantId}: the vulnerability export could not be read, and is tried again rather than taken for a fleet without CVEs`,
    { canRetry: true, details: { azureTenantId, path, status: 404, page: 1 } },
  );
}

/**
 * A next link asking for `pageSize` rows: its `pageSize` parameter (any case: Microsoft's links say `pagesize`)
 * rewritten, the rest kept as given. Its `$skiptoken` holds the position (Microsoft's a file and a line in it,
 * the simulator's a device and a row), not the page's size, so the page starts where the link's would.
 */
export function withPageSize(link: string, pageSize: number): string {
  const param = /([?&])(pagesize)=[^&#]*/i;
  if (param.test(link)) return link.replace(param, `$1$2=${pageSize}`);
  return `${link}${link.includes('?') ? '&' : '?'}pageSize=${pageSize}`;
}

/**
 * Follows the export's next links from its first page, at half the page size from a page cut at its slot's
 * end on (see BulkOptions.pageSize); the pages read.
 */
async function walkExportPages(
  deps: VulnerabilityDeps,
  requested: number,
  scanPage: (
    next: string,
    params: Record<string, number> | undefined,
    onTimeout: 'retry' | 'throw',
  ) => Promise<RowsScan>,
): Promise<number> {
  const { azureTenantId } = deps;
  const path = '/api/machines/SoftwareVulnerabilitiesByMachine';
  let pageSize = requested;
  let pages = 0;
  let next: string | undefined = path;
  const followed = new Set<string>([path]);
  while (next) {
    const link: string = next;
    const result = await readHalvingOnTimeout(
      pageSize,
      MIN_HALVED_BULK_PAGE_SIZE,
      (size, onTimeout) =>
        pages === 0
          ? scanPage(path, { pageSize: size }, onTimeout)
          : // The next link carries every parameter, the page size it was asked with too.
            scanPage(size === requested ? link : withPageSize(link, size), undefined, onTimeout),
      (halved) => {
        pageSize = halved;
        deps.logger.warn(
          'defender: a page of the bulk export did not arrive within its call slot; asking for smaller pages',
          { azureTenantId, page: pages + 1, pageSize },
        );
      },
    );
    // A 404 leaves the export unread, on the first page as on a later one (its next link lapsed): the
    // devices of the pages not read would be taken for devices without CVEs. (An export with no rows
    // answers 200 and an empty page.)
    if (result.status === 404)
      throw pages > 0 ? lostPage(path, pages, azureTenantId) : noExport(path, azureTenantId);
    pages++;
    next = freshNextLink(result.members, followed, path, azureTenantId);
  }
  return pages;
}

/** The export snapshot Microsoft serves now: when it was generated, and how many files hold it. */
export interface ExportGeneration {
  /** `generatedTime` as Microsoft gave it (ISO 8601). Two answers name the same snapshot when they are equal. */
  generatedTime: string;
  /** Files the snapshot is split into (their SAS URLs are not kept: they grant read access to the data). */
  files: number;
}

/**
 * `GET /api/machines/SoftwareVulnerabilitiesExport` (5 calls/min and 20/h), the export "via files", asked
 * only for its `generatedTime`. Microsoft regenerates the full export every 6 hours and both ways of
 * reading it (JSON pages and files) serve the latest snapshot, so an unchanged `generatedTime` means the
 * JSON export holds what it held when it was last read. An answer without a readable `generatedTime` is
 * MALFORMED_RESPONSE.
 */
export async function fetchExportGeneration(
  deps: VulnerabilityDeps,
  signal?: AbortSignal,
): Promise<ExportGeneration> {
  const path = '/api/machines/SoftwareVulnerabilitiesExport';
  const result = await deps.api.get('exportFiles', path, undefined, signal);
  if (result.status === 404) {
    throw new DefenderError(
      DefenderErrorCode.NOT_FOUND,
      `The Defender API of tenant ${deps.azureTenantId} has no vulnerability export files (404)`,
      { details: { azureTenantId: deps.azureTenantId, path } },
    );
  }
  const body = result.body as { generatedTime?: unknown; exportFiles?: unknown } | null;
  const generatedTime = body?.generatedTime;
  if (
    typeof generatedTime !== 'string' ||
    Number.isNaN(Date.parse(generatedTime)) ||
    !Array.isArray(body?.exportFiles)
  ) {
    throw new DefenderError(
      DefenderErrorCode.MALFORMED_RESPONSE,
      `The Defender API answered ${path} without a "generatedTime" date and an "exportFiles" array`,
      { canRetry: true, details: { azureTenantId: deps.azureTenantId, path } },
    );
  }
  return { generatedTime, files: body.exportFiles.length };
}

export type VulnerabilityMode = 'per-device' | 'bulk';

export interface VulnerabilityPlan {
  mode: VulnerabilityMode;
  /** Per-device calls the tenant's share of its quota allows in one poll interval, after the headroom. */
  perDeviceCapacity: number;
}

export interface VulnerabilityPlanOptions {
  /**
   * The tenants registered with the app the quota is counted for (`appQuotaId`), this one included: each plans
   * with its share of the quota. Default 1.
   */
  sharers?: number;
  /** Default Microsoft's per-device quota (`MICROSOFT_QUOTAS.vulnerabilities`). */
  quota?: readonly QuotaWindow[];
  /** The share of the quota per-device calls may plan on; default 0.8. */
  headroom?: number;
}

/**
 * Per-device calls fit when `deviceCount ≤ headroom × min(perMinute × interval, perHour × interval / 60) /
 * sharers`; otherwise the bulk export is used. `headroom` leaves room for retries and the listing. Microsoft
 * counts the quota per app and Entra tenant, so tenants registered with one app share it: each planning with
 * the whole of it, two tenants of 1,000 devices polled hourly each chose per-device calls (1,200 fit), together
 * asked for 2,000 against 1,500 an hour, and their calls failed THROTTLED every cycle.
 */
export function planVulnerabilityMode(
  deviceCount: number,
  pollIntervalMinutes: number,
  { sharers = 1, quota = MICROSOFT_QUOTAS.vulnerabilities, headroom = 0.8 }: VulnerabilityPlanOptions = {},
): VulnerabilityPlan {
  const intervalMs = pollIntervalMinutes * 60_000;
  let capacity = Infinity;
  for (const window of quota) capacity = Math.min(capacity, (window.limit * intervalMs) / window.windowMs);
  const perDeviceCapacity = Math.floor((capacity * headroom) / Math.max(1, sharers));
  return { mode: deviceCount <= perDeviceCapacity ? 'per-device' : 'bulk', perDeviceCapacity };
}

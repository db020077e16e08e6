import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { compileFilter, FilterError } from './filter';
import { jsonArrayParts, sendParts, sendRaw } from './http';
import { hash32, hashString } from './rng';
import type { PastEndPage, TenantState } from './state';
import type { CveEntryView, ExportView } from './fleet';
import type { AffectedSoftware, MachineRecord, VulnerabilityRecord } from './types';

// Microsoft Defender for Endpoint API handlers. They run after authentication, authorisation,
// quotas and fault injection (see server.ts) and only shape the answers.

/** MDE's OData list content type. */
const ODATA_JSON =
  'application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8';
export const MAX_TOP = 10_000;
export const BULK_DEFAULT_PAGE = 50_000;
export const BULK_MAX_PAGE = 200_000;

export interface Reply {
  status: number;
  /** JSON body; ignored when `raw` is set. */
  body: unknown;
  /** Already serialised body (hot paths build JSON by string joins). */
  raw?: string;
  /**
   * The body in parts, rendered as they are written (the bulk export: a page is ~40 MB, so the client
   * reads the first rows while the last are still being rendered, as from the real streaming service).
   * Takes precedence over `raw` and `body`.
   */
  parts?: () => Iterable<Buffer>;
  headers?: Record<string, string | number>;
}

/** The MDE error body: `{"error":{"code","message","target"}}`, target being a correlation id. */
export function mdeError(
  status: number,
  code: string,
  message: string,
  headers?: Record<string, string | number>,
): Reply {
  return {
    status,
    body: { error: { code, message, target: randomUUID() } },
    ...(headers ? { headers } : {}),
  };
}

/**
 * Writes `reply`; cut in half when `malformed`, gzipped when `gzip` (the request accepted it), its bytes
 * sent at `bytesPerSec` when given (the whole body rendered first).
 */
export function send(
  res: ServerResponse,
  reply: Reply,
  malformed: boolean,
  gzip = false,
  bytesPerSec?: number,
): Promise<void> | void {
  const headers: Record<string, string | number> = { 'OData-Version': '4.0', ...(reply.headers ?? {}) };
  if (reply.status === 200) headers['Content-Type'] = ODATA_JSON;
  if (reply.parts && !malformed && bytesPerSec === undefined)
    return sendParts(res, reply.status, reply.parts(), headers, gzip);
  const full = reply.parts
    ? Buffer.concat([...reply.parts()]).toString('utf8')
    : (reply.raw ?? JSON.stringify(reply.body));
  // A malformed answer is a body cut mid-stream, as when a gateway truncates a large answer.
  sendRaw(
    res,
    reply.status,
    malformed ? full.slice(0, Math.max(1, Math.floor(full.length / 2))) : full,
    headers,
    gzip,
    bytesPerSec,
  );
}

/** A non-negative integer query option; undefined when absent, an Error naming it when not an integer. */
export function intParam(query: URLSearchParams, name: string): number | undefined | Error {
  const raw = query.get(name);
  if (raw === null) return undefined;
  if (!/^\d+$/.test(raw))
    return new Error(
      `Invalid value '${raw}' for the ${name} query option; a non-negative integer is expected.`,
    );
  return Number(raw);
}

/** Reads `$top`; shared with the short-page fault which must know whether more devices remain. */
export function pageWindow(query: URLSearchParams): { skip: number; top: number | undefined } | Reply {
  const top = intParam(query, '$top');
  const skip = intParam(query, '$skip');
  if (top instanceof Error) return mdeError(400, 'ODataError', top.message);
  if (skip instanceof Error) return mdeError(400, 'ODataError', skip.message);
  if (top !== undefined && top > MAX_TOP) {
    return mdeError(
      400,
      'ODataError',
      `The limit of '${MAX_TOP}' for Top query has been exceeded. The value from the incoming request is '${top}'.`,
    );
  }
  return { skip: skip ?? 0, top };
}

/** Machines per part of a listing page (~1.5 KB each). */
export const MACHINES_PER_PART = 200;

/**
 * `GET /api/machines`. With `$top` there is never an `@odata.nextLink` (real behaviour); without it
 * a page holds 10,000 devices and a `$skip` next link. A page with no device in it answers 404 (an empty
 * fleet, no match, or a `$skip` past the end; the last answers 200 with no device when `pastEnd` is 'empty').
 * `shortPage` drops the second half of a full page while more devices remain.
 */
export function listMachines(
  base: string,
  tenant: TenantState,
  query: URLSearchParams,
  shortPage: boolean,
  pastEnd: PastEndPage = 'notFound',
): Reply {
  const window = pageWindow(query);
  if ('status' in window) return window;
  const fleet = tenant.fleet;
  const pageSize = window.top ?? MAX_TOP;
  const filterText = query.get('$filter');
  // The page's records as JSON, items start..end-1 (rendered part by part as the page is written).
  let slice: (start: number, end: number) => readonly string[];
  let count: number;
  let more: boolean;
  if (filterText) {
    let predicate;
    try {
      predicate = compileFilter(filterText);
    } catch (err) {
      if (err instanceof FilterError)
        return mdeError(400, 'ODataError', `Invalid OData URI query: ${err.message}`);
      throw err;
    }
    const matches: MachineRecord[] = [];
    const total = fleet.size();
    let matched = 0;
    for (let ordinal = 0; ordinal < total && matches.length <= pageSize; ordinal++) {
      const record = fleet.at(ordinal) as MachineRecord;
      if (!predicate(record)) continue;
      if (matched++ >= window.skip) matches.push(record);
    }
    more = matches.length > pageSize;
    count = Math.min(pageSize, matches.length);
    slice = (start, end) => matches.slice(start, end).map((record) => JSON.stringify(record));
  } else {
    count = Math.max(0, Math.min(pageSize, fleet.size() - window.skip));
    more = window.skip + pageSize < fleet.size();
    slice = (start, end) => fleet.sliceJson(window.skip + start, end - start);
  }
  // Microsoft answers a listing with no machine in it 404 (get-machines: "404 Not Found when there are no
  // recent machines"): an empty fleet, a filter nothing matches, and a `$skip` past the last device alike.
  if (count === 0 && !(pastEnd === 'empty' && window.skip > 0))
    return mdeError(404, 'ResourceNotFound', 'No machines were found for the tenant.');
  if (shortPage && more && count > 1) count = Math.ceil(count / 2);
  let nextLink = '';
  if (window.top === undefined && more) {
    const next = new URLSearchParams(query);
    next.set('$skip', String(window.skip + pageSize));
    nextLink = `,"@odata.nextLink":${JSON.stringify(`${base}/api/machines?${next.toString()}`)}`;
  }
  // Records are serialised (and cached) one by one, and the page goes out in parts, never as one string.
  const head = `{"@odata.context":${JSON.stringify(`${base}/api/$metadata#Machines`)},"value":[`;
  return {
    status: 200,
    body: undefined,
    parts: () => jsonArrayParts(head, count, slice, `]${nextLink}}`, MACHINES_PER_PART),
  };
}

export function getMachine(base: string, tenant: TenantState, id: string): Reply {
  const record = tenant.fleet.get(id.toLowerCase());
  if (!record) return mdeError(404, 'ResourceNotFound', `Machine ${id} was not found.`);
  return { status: 200, body: { '@odata.context': `${base}/api/$metadata#Machines/$entity`, ...record } };
}

export function machineVulnerabilities(base: string, tenant: TenantState, id: string): Reply {
  const json = tenant.fleet.vulnerabilitiesJson(id.toLowerCase());
  if (json === undefined) return mdeError(404, 'ResourceNotFound', `Machine ${id} was not found.`);
  return {
    status: 200,
    body: undefined,
    // The context of get-discovered-vulnerabilities' example (the type of its rows).
    raw: `{"@odata.context":${JSON.stringify(`${base}/api/$metadata#Collection(Analytics.Contracts.PublicAPI.PublicVulnerabilityDto)`)},"value":${json}}`,
  };
}

interface SkipToken {
  LastSeenOrdinal: number;
  RowOffset: number;
  /** The export snapshot the read is of (its generation time, epoch ms): its pages keep to it. */
  Generation?: number;
}

function encodeSkipToken(token: SkipToken): string {
  return Buffer.from(JSON.stringify(token)).toString('base64url');
}

function decodeSkipToken(raw: string): SkipToken | undefined {
  try {
    const parsed = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as SkipToken;
    if (
      Number.isInteger(parsed.LastSeenOrdinal) &&
      Number.isInteger(parsed.RowOffset) &&
      parsed.LastSeenOrdinal >= 0 &&
      parsed.RowOffset >= 0 &&
      (parsed.Generation === undefined || Number.isInteger(parsed.Generation))
    )
      return parsed;
  } catch {
    // fall through: invalid token
  }
  return undefined;
}

function exportTimestamp(iso: unknown): string {
  return (typeof iso === 'string' ? iso : '1970-01-01T00:00:00Z').slice(0, 19).replace('T', ' ');
}

const text = (value: string | null): string => JSON.stringify(value);

function exploitabilityOf(v: VulnerabilityRecord): string {
  if (v.exploitInKit) return 'ExploitIsInKit';
  if (v.exploitVerified) return 'ExploitIsVerified';
  return v.publicExploit ? 'ExploitIsPublic' : 'NoExploit';
}

/**
 * A row's fields after the device's, from `softwareVendor` on, as JSON text (no braces). A row without
 * a CVE (`v` null: software inventory) has null CVE fields and `NoExploit`.
 */
function rowTail(v: VulnerabilityRecord | null, s: AffectedSoftware, isWindows: boolean): string {
  const diskPath = isWindows
    ? `C:\\Program Files\\${s.vendor}\\${s.name}\\${s.name}.exe`
    : `/usr/lib/${s.name}`;
  const registryPaths = isWindows ? [`HKEY_LOCAL_MACHINE\\SOFTWARE\\${s.vendor}\\${s.name}`] : [];
  return (
    `,"softwareVendor":${text(s.vendor)},"softwareName":${text(s.name)},"softwareVersion":${text(s.version)}` +
    `,"cveId":${v ? text(v.id) : 'null'},"vulnerabilitySeverityLevel":${v ? text(v.severity) : 'null'}` +
    `,"recommendedSecurityUpdate":${text(s.recommendedSecurityUpdate)}` +
    `,"recommendedSecurityUpdateId":${text(s.recommendedSecurityUpdateId)}` +
    `,"recommendedSecurityUpdateUrl":${text(s.recommendedSecurityUpdateId ? `https://support.microsoft.com/help/${s.recommendedSecurityUpdateId}` : null)}` +
    `,"diskPaths":${JSON.stringify([diskPath])},"registryPaths":${JSON.stringify(registryPaths)}` +
    `,"exploitabilityLevel":${text(v ? exploitabilityOf(v) : 'NoExploit')}` +
    `,"recommendationReference":${text(`va-_-${s.vendor}-_-${s.name}`)}` +
    `,"securityUpdateAvailable":${String(s.recommendedSecurityUpdateId !== null)}` +
    `,"cvssScore":${v ? JSON.stringify(v.cvssV3) : 'null'}}`
  );
}

/**
 * Tails of the shared catalog's CVEs (the same for every device on the same kind of platform),
 * rendered once: an export of 50,000 devices repeats a few thousand CVEs ~300,000 times.
 */
const catalogTails = new WeakMap<CveEntryView, { windows?: string; other?: string }>();

function cachedTail(entry: CveEntryView, isWindows: boolean): string {
  // Only catalog entries carry their JSON; overrides are fresh objects each call and are not cached.
  if (entry.json === undefined) return rowTail(entry.vulnerability, entry.software, isWindows);
  let tails = catalogTails.get(entry);
  if (!tails) catalogTails.set(entry, (tails = {}));
  if (isWindows) return (tails.windows ??= rowTail(entry.vulnerability, entry.software, true));
  return (tails.other ??= rowTail(entry.vulnerability, entry.software, false));
}

/** Tails of the shared inventory's rows without a CVE (see volume.ts), rendered once each. */
const inventoryTails = new WeakMap<AffectedSoftware, { windows?: string; other?: string }>();

function inventoryTail(software: AffectedSoftware, isWindows: boolean): string {
  let tails = inventoryTails.get(software);
  if (!tails) inventoryTails.set(software, (tails = {}));
  if (isWindows) return (tails.windows ??= rowTail(null, software, true));
  return (tails.other ??= rowTail(null, software, false));
}

/**
 * Rows of one device in SoftwareVulnerabilitiesByMachine order, each as the JSON text of a
 * SoftwareVulnerabilityRow (fields in the documented order). Built from fragments rather than by
 * serialising row objects: the export is the largest answer by far (~5 KB per device under the light mix,
 * ~900 bytes a row).
 */
export function deviceRowsJson(
  view: Pick<ExportView, 'exportEntries' | 'softwareOnly'>,
  record: MachineRecord,
): string[] {
  const entries = view.exportEntries(record.id) ?? [];
  const inventory = view.softwareOnly(record.id);
  if (entries.length === 0 && !inventory?.length) return [];
  // A patch may have set a field to another type than the record's: such a value reads as absent here.
  const isWindows = typeof record.osPlatform === 'string' && record.osPlatform.startsWith('Windows');
  const device =
    // A device in no RBAC group is "Unassigned" in the export (get-assessment-software-vulnerabilities), where
    // /api/machines gives it null.
    `,"deviceId":${text(record.id)},"rbacGroupName":${text(record.rbacGroupName ?? 'Unassigned')}` +
    `,"deviceName":${text(record.computerDnsName ?? null)},"osPlatform":${text(record.osPlatform ?? null)}` +
    `,"osVersion":${text(record.version ?? null)}` +
    `,"osArchitecture":${record.osArchitecture === '32-bit' ? '"x86"' : '"x64"'}` +
    `,"lastSeenTimestamp":${text(exportTimestamp(record.lastSeen))}` +
    `,"firstSeenTimestamp":${text(exportTimestamp(record.firstSeen))}`;
  const rowId = (s: AffectedSoftware, cveId: string): string =>
    `{"id":${text(`${record.id}_${s.vendor}_${s.name}_${s.version}_${cveId}`)}`;
  const rows = entries.map(
    (entry) => rowId(entry.software, entry.vulnerability.id) + device + cachedTail(entry, isWindows),
  );
  // Real exports carry software inventory rows without a CVE: as many as the fleet's export volume asks
  // for, or under the light mix one on one device in ten.
  if (inventory) {
    for (const software of inventory)
      rows.push(rowId(software, '') + device + inventoryTail(software, isWindows));
  } else if (hash32(hashString(record.id), 9) % 10 === 0) {
    const first = entries[0] as CveEntryView;
    rows.push(rowId(first.software, '') + device + rowTail(null, first.software, isWindows));
  }
  return rows;
}

/** Rows rendered before they are handed on as one part of the answer. */
const ROWS_PER_PART = 2_000;
const COMMA = Buffer.from(',');

/**
 * One export page as JSON text in parts: the rows from `cursor` on, `pageSize` at most, then the next
 * link when more rows remain (and the page was not asked with `$top`).
 */
function* bulkPageParts(
  base: string,
  view: ExportView,
  pageSize: number,
  cursor: SkipToken,
  withNextLink: boolean,
): Generator<Buffer> {
  const context = `${base}/api/$metadata#Collection(microsoft.windowsDefenderATP.api.AssetVulnerability)`;
  yield Buffer.from(`{"@odata.context":${JSON.stringify(context)},"value":[`);
  const total = view.size();
  let ordinal = cursor.LastSeenOrdinal;
  let offset = cursor.RowOffset;
  let taken = 0;
  let inPart = 0;
  const part: Buffer[] = [];
  const flush = (): Buffer => {
    const bytes = Buffer.concat(part);
    part.length = 0;
    inPart = 0;
    return bytes;
  };
  while (ordinal < total && taken < pageSize) {
    const rows = view.rowsAt(ordinal, (record, of) => deviceRowsJson(of, record));
    const count = Math.min(rows.starts.length - offset, pageSize - taken);
    if (count > 0) {
      const from = rows.starts[offset] as number;
      const to =
        offset + count < rows.starts.length ? (rows.starts[offset + count] as number) - 1 : rows.bytes.length;
      if (taken > 0) part.push(COMMA);
      part.push(rows.bytes.subarray(from, to));
      inPart += count;
      taken += count;
      offset += count;
    }
    if (offset >= rows.starts.length) {
      ordinal++;
      offset = 0;
    }
    if (inPart >= ROWS_PER_PART) yield flush();
  }
  let tail = ']';
  if (withNextLink && ordinal < total) {
    const next = `${base}/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=${pageSize}&$skiptoken=${encodeSkipToken({ LastSeenOrdinal: ordinal, RowOffset: offset, Generation: view.generation })}`;
    tail += `,"@odata.nextLink":${JSON.stringify(next)}`;
  }
  part.push(Buffer.from(`${tail}}`));
  yield flush();
}

/**
 * `GET /api/machines/SoftwareVulnerabilitiesByMachine`: `pageSize` (default 50,000, max 200,000)
 * with an `@odata.nextLink` carrying `$skiptoken`; `$top` returns one page and no next link.
 */
export function bulkVulnerabilities(base: string, tenant: TenantState, query: URLSearchParams): Reply {
  const pageSizeRaw = intParam(query, 'pageSize') ?? intParam(query, 'pagesize');
  const topRaw = intParam(query, '$top');
  if (pageSizeRaw instanceof Error) return mdeError(400, 'InvalidInput', pageSizeRaw.message);
  if (topRaw instanceof Error) return mdeError(400, 'InvalidInput', topRaw.message);
  if (pageSizeRaw !== undefined && (pageSizeRaw < 1 || pageSizeRaw > BULK_MAX_PAGE)) {
    return mdeError(
      400,
      'InvalidInput',
      `Invalid input pageSize: ${pageSizeRaw}. pageSize must be between 1 and ${BULK_MAX_PAGE}.`,
    );
  }
  const pageSize = topRaw ?? pageSizeRaw ?? BULK_DEFAULT_PAGE;
  const rawToken = query.get('$skiptoken');
  let cursor: SkipToken = { LastSeenOrdinal: 0, RowOffset: 0 };
  if (rawToken !== null) {
    const decoded = decodeSkipToken(rawToken);
    if (!decoded) return mdeError(400, 'InvalidInput', `Invalid input $skiptoken.`);
    cursor = decoded;
  }
  // A read keeps to the snapshot of its first page; one whose snapshot is no longer kept has lapsed.
  const view = tenant.fleet.exportView(cursor.Generation);
  if (!view)
    return mdeError(
      404,
      'ResourceNotFound',
      'The export snapshot of this $skiptoken is no longer available.',
    );
  return {
    status: 200,
    body: undefined,
    parts: () => bulkPageParts(base, view, pageSize, cursor, topRaw === undefined),
  };
}

import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { compileFilter, FilterError } from './filter';
import { sendRaw } from './http';
import { hash32, hashString } from './rng';
import type { TenantState } from './state';
import type { MachineRecord, SoftwareVulnerabilityRow } from './types';

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

export function send(res: ServerResponse, reply: Reply, malformed: boolean): void {
  const headers: Record<string, string | number> = { 'OData-Version': '4.0', ...(reply.headers ?? {}) };
  if (reply.status === 200) headers['Content-Type'] = ODATA_JSON;
  const full = reply.raw ?? JSON.stringify(reply.body);
  // A malformed answer is a body cut mid-stream, as when a gateway truncates a large answer.
  sendRaw(
    res,
    reply.status,
    malformed ? full.slice(0, Math.max(1, Math.floor(full.length / 2))) : full,
    headers,
  );
}

function intParam(query: URLSearchParams, name: string): number | undefined | Error {
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

/**
 * `GET /api/machines`. With `$top` there is never an `@odata.nextLink` (real behaviour); without it
 * a page holds 10,000 devices and a `$skip` next link. An empty fleet answers 404.
 * `shortPage` drops the second half of a full page while more devices remain.
 */
export function listMachines(
  base: string,
  tenant: TenantState,
  query: URLSearchParams,
  shortPage: boolean,
): Reply {
  const window = pageWindow(query);
  if ('status' in window) return window;
  const fleet = tenant.fleet;
  if (fleet.size() === 0) return mdeError(404, 'ResourceNotFound', 'No machines were found for the tenant.');
  const pageSize = window.top ?? MAX_TOP;
  const filterText = query.get('$filter');
  let page: string[];
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
    page = matches.slice(0, pageSize).map((record) => JSON.stringify(record));
  } else {
    page = fleet.sliceJson(window.skip, pageSize);
    more = window.skip + pageSize < fleet.size();
  }
  if (shortPage && more && page.length > 1) page = page.slice(0, Math.ceil(page.length / 2));
  let nextLink = '';
  if (window.top === undefined && more) {
    const next = new URLSearchParams(query);
    next.set('$skip', String(window.skip + pageSize));
    nextLink = `,"@odata.nextLink":${JSON.stringify(`${base}/api/machines?${next.toString()}`)}`;
  }
  // Built by string joins: records are serialised (and cached) one by one, never as a whole page.
  const raw = `{"@odata.context":${JSON.stringify(`${base}/api/$metadata#Machines`)},"value":[${page.join(',')}]${nextLink}}`;
  return { status: 200, body: undefined, raw };
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
    raw: `{"@odata.context":${JSON.stringify(`${base}/api/$metadata#Vulnerabilities`)},"value":${json}}`,
  };
}

interface SkipToken {
  LastSeenOrdinal: number;
  RowOffset: number;
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
      parsed.RowOffset >= 0
    )
      return parsed;
  } catch {
    // fall through: invalid token
  }
  return undefined;
}

function exportTimestamp(iso: string | undefined): string {
  return (iso ?? '1970-01-01T00:00:00Z').slice(0, 19).replace('T', ' ');
}

/** Rows of one device in SoftwareVulnerabilitiesByMachine order. */
export function deviceRows(tenant: TenantState, record: MachineRecord): SoftwareVulnerabilityRow[] {
  const entries = tenant.fleet.cveEntries(record.id) ?? [];
  const isWindows = (record.osPlatform ?? '').startsWith('Windows');
  const common = {
    deviceId: record.id,
    rbacGroupName: record.rbacGroupName ?? null,
    deviceName: record.computerDnsName ?? null,
    osPlatform: record.osPlatform ?? null,
    osVersion: record.version ?? null,
    osArchitecture: record.osArchitecture === '32-bit' ? 'x86' : 'x64',
    lastSeenTimestamp: exportTimestamp(record.lastSeen),
    firstSeenTimestamp: exportTimestamp(record.firstSeen),
  };
  const rows: SoftwareVulnerabilityRow[] = entries.map(({ vulnerability: v, software: s }) => ({
    id: `${record.id}_${s.vendor}_${s.name}_${s.version}_${v.id}`,
    ...common,
    softwareVendor: s.vendor,
    softwareName: s.name,
    softwareVersion: s.version,
    cveId: v.id,
    vulnerabilitySeverityLevel: v.severity,
    recommendedSecurityUpdate: s.recommendedSecurityUpdate,
    recommendedSecurityUpdateId: s.recommendedSecurityUpdateId,
    recommendedSecurityUpdateUrl: s.recommendedSecurityUpdateId
      ? `https://support.microsoft.com/help/${s.recommendedSecurityUpdateId}`
      : null,
    diskPaths: isWindows
      ? [`C:\\Program Files\\${s.vendor}\\${s.name}\\${s.name}.exe`]
      : [`/usr/lib/${s.name}`],
    registryPaths: isWindows ? [`HKEY_LOCAL_MACHINE\\SOFTWARE\\${s.vendor}\\${s.name}`] : [],
    exploitabilityLevel: v.exploitInKit
      ? 'ExploitIsInKit'
      : v.exploitVerified
        ? 'ExploitIsVerified'
        : v.publicExploit
          ? 'ExploitIsPublic'
          : 'NoExploit',
    recommendationReference: `va-_-${s.vendor}-_-${s.name}`,
    securityUpdateAvailable: s.recommendedSecurityUpdateId !== null,
    cvssScore: v.cvssV3,
  }));
  // Real exports carry software inventory rows without a CVE; one device in ten has one here.
  if (rows.length > 0 && hash32(hashString(record.id), 9) % 10 === 0) {
    const first = rows[0] as SoftwareVulnerabilityRow;
    rows.push({
      ...first,
      id: `${record.id}_${first.softwareVendor}_${first.softwareName}_${first.softwareVersion}_`,
      cveId: null,
      vulnerabilitySeverityLevel: null,
      cvssScore: null,
      exploitabilityLevel: 'NoExploit',
    });
  }
  return rows;
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
  const fleet = tenant.fleet;
  const total = fleet.size();
  const value: SoftwareVulnerabilityRow[] = [];
  let ordinal = cursor.LastSeenOrdinal;
  let offset = cursor.RowOffset;
  while (ordinal < total && value.length < pageSize) {
    const rows = deviceRows(tenant, fleet.at(ordinal) as MachineRecord);
    const take = rows.slice(offset, offset + (pageSize - value.length));
    for (const row of take) value.push(row);
    offset += take.length;
    if (offset >= rows.length) {
      ordinal++;
      offset = 0;
    }
  }
  const body: Record<string, unknown> = {
    '@odata.context': `${base}/api/$metadata#Collection(microsoft.windowsDefenderATP.api.AssetVulnerability)`,
    value,
  };
  if (topRaw === undefined && ordinal < total) {
    body['@odata.nextLink'] =
      `${base}/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=${pageSize}&$skiptoken=${encodeSkipToken({ LastSeenOrdinal: ordinal, RowOffset: offset })}`;
  }
  return { status: 200, body };
}

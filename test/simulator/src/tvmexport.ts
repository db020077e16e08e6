import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { sendRaw } from './http';
import { deviceRowsJson, intParam, mdeError, type Reply } from './mde';
import type { TenantState } from './state';
import type { ExportView, Fleet } from './fleet';
import type { MachineRecord } from './types';

// Microsoft's "Export software vulnerabilities assessment: via files": `GET
// /api/machines/SoftwareVulnerabilitiesExport` names the files of the latest export snapshot (its
// `generatedTime`), each a gzip of multiline JSON (one SoftwareVulnerabilitiesByMachine row per line) behind
// an Azure Storage SAS URL. Here the files are served by the simulator itself under /tvm-export/, signed
// with a key made at server start, and rendered from the live fleet: a snapshot is the fleet at one
// `Fleet.generatedAtMs`, and its files are gone (404 BlobNotFound) once the fleet changed.

/** Devices per export file (a file holds every row of its devices). */
export const DEVICES_PER_EXPORT_FILE = 50_000;
/** The storage service version the SAS URLs name (`sv`). */
export const SAS_VERSION = '2020-08-04';
/** `sasValidHours`: 1 (default) to 6. */
export const SAS_MAX_HOURS = 6;
export const EXPORT_PATH_PREFIX = '/tvm-export/';

/** Signs export file URLs like an Azure Storage SAS: HMAC-SHA256 over the path and the expiry. */
export class SasSigner {
  private readonly key = randomBytes(32);

  sign(path: string, expiry: string): string {
    return createHmac('sha256', this.key).update(`${path}\n${expiry}`).digest('base64url');
  }

  verify(path: string, expiry: string, sig: string): boolean {
    const expected = Buffer.from(this.sign(path, expiry));
    const given = Buffer.from(sig);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }
}

/** Files of an export of `devices` devices: at least one, even for an empty fleet. */
export function exportFileCount(devices: number): number {
  return Math.max(1, Math.ceil(devices / DEVICES_PER_EXPORT_FILE));
}

function filePath(tenantId: string, generation: number, part: number): string {
  return `${EXPORT_PATH_PREFIX}${tenantId}/${generation}/part-${String(part).padStart(5, '0')}.json.gz`;
}

/** A SAS time: ISO 8601 UTC to the second. */
function sasTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * `GET /api/machines/SoftwareVulnerabilitiesExport?sasValidHours=1..6`: the SAS URLs of the current
 * snapshot's files, one per DEVICES_PER_EXPORT_FILE devices, valid `sasValidHours` hours (default 1), and
 * the snapshot's `generatedTime`.
 */
export function exportFilesList(
  base: string,
  tenant: TenantState,
  query: URLSearchParams,
  signer: SasSigner,
  nowMs: number = Date.now(),
): Reply {
  const hoursRaw = intParam(query, 'sasValidHours') ?? intParam(query, 'sasvalidhours');
  if (hoursRaw instanceof Error) return mdeError(400, 'InvalidInput', hoursRaw.message);
  if (hoursRaw !== undefined && (hoursRaw < 1 || hoursRaw > SAS_MAX_HOURS)) {
    return mdeError(
      400,
      'InvalidInput',
      `Invalid input sasValidHours: ${hoursRaw}. sasValidHours must be between 1 and ${SAS_MAX_HOURS}.`,
    );
  }
  const fleet = tenant.fleet;
  const generation = fleet.generatedAtMs;
  const expiry = sasTime(nowMs + (hoursRaw ?? 1) * 3_600_000);
  const files: string[] = [];
  for (let part = 0; part < exportFileCount(exportSize(fleet)); part++) {
    const path = filePath(tenant.id, generation, part);
    const sas = new URLSearchParams({
      sv: SAS_VERSION,
      sr: 'b',
      sp: 'r',
      se: expiry,
      sig: signer.sign(path, expiry),
    });
    files.push(`${base}${path}?${sas.toString()}`);
  }
  return {
    status: 200,
    body: {
      '@odata.context': `${base}/api/$metadata#microsoft.windowsDefenderATP.api.ExportFilesResponse`,
      exportFiles: files,
      generatedTime: new Date(generation).toISOString(),
    },
  };
}

/**
 * Why a SAS does not grant access to `url` at `nowMs` (Azure's AuthenticationErrorDetail), or undefined
 * when it does.
 */
export function sasFailure(signer: SasSigner, url: URL, nowMs: number): string | undefined {
  const expiry = url.searchParams.get('se');
  const sig = url.searchParams.get('sig');
  if (!expiry || !sig) return 'Signature fields not well formed.';
  if (!signer.verify(url.pathname, expiry, sig)) return 'Signature did not match.';
  const expiresAt = Date.parse(expiry);
  if (!(expiresAt > nowMs)) {
    const at = (ms: number): string => (Number.isFinite(ms) ? new Date(ms).toUTCString() : expiry);
    return `Signature not valid in the specified time frame: Expiry [${at(expiresAt)}] - Current [${at(nowMs)}]`;
  }
  return undefined;
}

const xmlEscape = (text: string): string =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** An Azure Storage error: an XML `<Error>` body and its code in `x-ms-error-code`. */
function sendStorageError(
  res: ServerResponse,
  status: number,
  code: string,
  message: string,
  detail?: string,
): void {
  const requestId = randomUUID();
  const time = new Date().toISOString().replace('Z', '0000Z');
  const body =
    `<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code>` +
    `<Message>${xmlEscape(`${message}\nRequestId:${requestId}\nTime:${time}`)}</Message>` +
    (detail === undefined
      ? ''
      : `<AuthenticationErrorDetail>${xmlEscape(detail)}</AuthenticationErrorDetail>`) +
    '</Error>';
  sendRaw(res, status, body, {
    'Content-Type': 'application/xml',
    'x-ms-error-code': code,
    'x-ms-request-id': requestId,
    'x-ms-version': SAS_VERSION,
  });
}

const blobNotFound = (res: ServerResponse): void =>
  sendStorageError(res, 404, 'BlobNotFound', 'The specified blob does not exist.');

/** The snapshot changed while one of its files was being written: the file no longer exists. */
class SnapshotReplaced extends Error {}

/** Devices in the export snapshot served now (the fleet's listing may have moved on since). */
function exportSize(fleet: Fleet): number {
  return (fleet.exportView() as ExportView).size();
}

/** Uncompressed bytes handed to gzip at a time. */
const CHUNK_BYTES = 256 * 1024;
const NEWLINE = 0x0a;

/**
 * The rows of devices `first..end-1` as multiline JSON, in chunks, rendered as they are asked for. A
 * device's rendered rows are joined by commas, so they are split at their start offsets. Throws
 * SnapshotReplaced when the fleet moves to a new generation mid-file.
 */
function* fileLines(tenant: TenantState, first: number, end: number, generation: number): Generator<Buffer> {
  const fleet = tenant.fleet;
  const render = (record: MachineRecord, view: ExportView): string[] => deviceRowsJson(view, record);
  const chunk: Buffer[] = [];
  let size = 0;
  for (let ordinal = first; ordinal < end; ordinal++) {
    if (fleet.generatedAtMs !== generation) throw new SnapshotReplaced('the export snapshot was replaced');
    const rows = fleet.rowsAt(ordinal, render);
    if (rows.starts.length === 0) continue;
    // Copied: cached rows are shared with the JSON export.
    const lines = Buffer.allocUnsafe(rows.bytes.length + 1);
    rows.bytes.copy(lines);
    for (let i = 1; i < rows.starts.length; i++) lines[(rows.starts[i] as number) - 1] = NEWLINE;
    lines[rows.bytes.length] = NEWLINE;
    chunk.push(lines);
    size += lines.length;
    if (size >= CHUNK_BYTES) {
      yield Buffer.concat(chunk, size);
      chunk.length = 0;
      size = 0;
    }
  }
  if (size > 0) yield Buffer.concat(chunk, size);
}

export interface DownloadDeps {
  tenant(id: string): TenantState | undefined;
  signer: SasSigner;
  /** Counts the call in the statistics (kind `exportFile`). */
  count(kind: string, tenantId: string | undefined, res: ServerResponse): void;
  enterTenant(res: ServerResponse, tenantId: string): void;
}

const FILE_NAME = /^part-(\d{5})\.json\.gz$/;

/**
 * `GET /tvm-export/<tenant>/<generatedAtMs>/part-<nnnnn>.json.gz?sv&sr&sp&se&sig`, the download of one
 * export file, authorised by its SAS alone (no bearer token): 403 AuthenticationFailed for a bad, missing
 * or expired signature, 404 BlobNotFound for a file not of the current snapshot. The gzip is streamed
 * as the rows are rendered, waiting while the client is behind.
 */
export async function handleExportDownload(
  deps: DownloadDeps,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
): Promise<void> {
  const kind = 'exportFile';
  if (req.method !== 'GET') {
    deps.count(kind, undefined, res);
    sendStorageError(res, 405, 'UnsupportedHttpVerb', "The resource doesn't support specified Http Verb.");
    return;
  }
  const failure = sasFailure(deps.signer, url, Date.now());
  if (failure !== undefined) {
    deps.count(kind, undefined, res);
    sendStorageError(
      res,
      403,
      'AuthenticationFailed',
      'Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.',
      failure,
    );
    return;
  }
  const [, tenantId = '', generationText = '', fileName = '', ...rest] = url.pathname
    .split('/')
    .filter((s) => s.length > 0);
  const tenant = deps.tenant(tenantId);
  deps.count(kind, tenant?.id, res);
  if (!tenant) return blobNotFound(res);
  deps.enterTenant(res, tenant.id);
  const fleet = tenant.fleet;
  const generation = fleet.generatedAtMs;
  const part = FILE_NAME.exec(fileName);
  const index = part ? Number(part[1]) : -1;
  if (rest.length > 0 || generationText !== String(generation) || index < 0) return blobNotFound(res);
  if (index >= exportFileCount(exportSize(fleet))) return blobNotFound(res);

  const first = index * DEVICES_PER_EXPORT_FILE;
  const end = Math.min(fleet.size(), first + DEVICES_PER_EXPORT_FILE);
  res.writeHead(200, {
    'Content-Type': 'application/octet-stream',
    'Last-Modified': new Date(generation).toUTCString(),
    ETag: `"0x${generation.toString(16).toUpperCase()}"`,
    'x-ms-blob-type': 'BlockBlob',
    'x-ms-request-id': randomUUID(),
    'x-ms-version': SAS_VERSION,
  });
  // One chunk at a time: the next is rendered once gzip took the last, and gzip waits for the socket.
  const lines = Readable.from(fileLines(tenant, first, end, generation), { highWaterMark: 1 });
  try {
    await pipeline(lines, createGzip(), res);
  } catch {
    // The client went away, or the snapshot was replaced mid-file: the answer is cut off (pipeline
    // destroyed it), as a download of a blob that no longer exists would be.
  }
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Writable } from 'node:stream';
import { createGzip, gzipSync } from 'node:zlib';

/** Largest request body the simulator reads (control API records, token forms). */
const MAX_BODY_BYTES = 64 * 1024 * 1024;

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string | number> = {},
): void {
  sendRaw(res, status, JSON.stringify(body), headers);
}

/** Whether a request accepts a gzipped answer (its Accept-Encoding names gzip, not with q=0). */
export function acceptsGzip(req: IncomingMessage): boolean {
  const accepted = req.headers['accept-encoding'];
  if (typeof accepted !== 'string') return false;
  return accepted
    .split(',')
    .map((item) => item.trim().toLowerCase().split(';'))
    .some(([coding, q]) => coding === 'gzip' && !/^\s*q=0(\.0*)?\s*$/.test(q ?? ''));
}

/**
 * `payload` as the answer; gzipped (`Content-Encoding: gzip`) when `gzip`; its bytes sent at `bytesPerSec`
 * when given (see writePaced), else at once.
 */
export function sendRaw(
  res: ServerResponse,
  status: number,
  payload: string,
  headers: Record<string, string | number> = {},
  gzip = false,
  bytesPerSec?: number,
): void {
  if (res.destroyed) return;
  const bytes = gzip ? gzipSync(payload) : Buffer.from(payload);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': bytes.length,
    ...(gzip ? { 'Content-Encoding': 'gzip', Vary: 'Accept-Encoding' } : {}),
    ...headers,
  });
  if (bytesPerSec === undefined) res.end(bytes);
  else writePaced(res, bytes, bytesPerSec);
}

/** How often a paced body sends its next slice, in milliseconds. */
const PACE_TICK_MS = 50;

/**
 * Writes `bytes` as the answer's body at `bytesPerSec`, a slice every PACE_TICK_MS, then ends it: an answer
 * on a link that slow, whose last byte comes long after its first. Stops when the client goes away.
 */
function writePaced(res: ServerResponse, bytes: Buffer, bytesPerSec: number): void {
  const perTick = Math.max(1, Math.round((bytesPerSec * PACE_TICK_MS) / 1000));
  let sent = 0;
  const timer = setInterval(() => {
    const slice = bytes.subarray(sent, (sent += perTick));
    if (sent < bytes.length) return void res.write(slice);
    clearInterval(timer);
    res.end(slice);
  }, PACE_TICK_MS);
  res.once('close', () => clearInterval(timer));
}

/**
 * A JSON array answer in parts of `perPart` items: `head`, the `count` items joined by commas, then `tail`.
 * `slice(start, end)` gives items start..end-1, each already JSON, and is asked part by part, so items are
 * rendered as they are written. A 10,000-device listing page is ~15 MB: rendered and written in slices
 * (see sendParts), the server goes on answering other calls between them, as the real service does,
 * instead of stalling them for the ~100–300 ms the whole page takes.
 */
export function* jsonArrayParts(
  head: string,
  count: number,
  slice: (start: number, end: number) => readonly string[],
  tail: string,
  perPart: number,
): Generator<Buffer> {
  yield Buffer.from(head);
  for (let start = 0; start < count; start += perPart) {
    const items = slice(start, Math.min(count, start + perPart)).join(',');
    yield Buffer.from(start === 0 ? items : `,${items}`);
  }
  yield Buffer.from(tail);
}

/** How much written and not yet taken by the client a streamed answer may hold before it waits. */
const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;

/**
 * Writes an answer part by part as the parts are rendered (chunked, no Content-Length), yielding to the
 * event loop between parts so the bytes leave while the next part is built; waits while the client is
 * more than MAX_BUFFERED_BYTES behind. Stops when the client goes away. A part that fails to render cuts the
 * answer off (and rejects with its error).
 */
export async function sendParts(
  res: ServerResponse,
  status: number,
  parts: Iterable<Buffer>,
  headers: Record<string, string | number> = {},
  gzip = false,
): Promise<void> {
  if (res.destroyed) return;
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    ...(gzip ? { 'Content-Encoding': 'gzip', Vary: 'Accept-Encoding' } : {}),
    ...headers,
  });
  // Gzipped, the parts go through a gzip stream piped to the answer; its own buffer counts as the answer's.
  const out: Writable = gzip ? createGzip() : res;
  if (gzip) {
    out.pipe(res);
    res.once('close', () => out.destroy());
  }
  try {
    for (const part of parts) {
      if (res.destroyed) return;
      out.write(part);
      // Either buffer past the bound had its last write refused, so its 'drain' comes.
      if (res.writableLength > MAX_BUFFERED_BYTES) await drained(res, res);
      else if (out.writableLength > MAX_BUFFERED_BYTES) await drained(out, res);
      else await new Promise<void>((resolve) => setImmediate(resolve));
    }
  } catch (err) {
    // A part failed to render after the status went out: the answer is cut off (the connection closed, no
    // last chunk), as a failing streamed answer is, rather than left open for a client to wait on for ever.
    if (gzip) out.destroy();
    res.destroy();
    throw err;
  }
  if (!res.destroyed) out.end();
}

/** Resolves once `out`'s buffer drained, or the response closed. */
function drained(out: Writable, res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      out.off('drain', done);
      res.off('close', done);
      resolve();
    };
    out.on('drain', done);
    res.on('close', done);
  });
}

export function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error(`request body exceeds ${MAX_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

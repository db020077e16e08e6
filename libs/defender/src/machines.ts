import type { Logger } from '@urs/logging';
import { DefenderError, DefenderErrorCode } from './errors';
import type { ApiCaller } from './http';
import { readHalvingOnTimeout } from './page-halving';
import { type MachineRecord, type ParseResult, parseMachine } from './schema';

/** Largest `$top` of `/api/machines`. */
export const MAX_MACHINE_PAGE_SIZE = 10_000;

/** Smallest `$top` a page that timed out is asked again with (see ListMachinesOptions.pageSize). */
export const MIN_HALVED_PAGE_SIZE = 500;

export interface MachineFlags {
  /** The record was merged into another device (`mergedIntoMachineId`): score the other one. */
  merged: boolean;
  /** Excluded by an administrator (`isExcluded`). */
  excluded: boolean;
}

export interface Machine {
  record: MachineRecord;
  flags: MachineFlags;
}

/** Whether a device should be scored: not merged into another one and not excluded. */
export function isScorable(machine: Machine): boolean {
  return !machine.flags.merged && !machine.flags.excluded;
}

/** A record that was skipped because it failed validation. */
export interface InvalidRecord {
  kind: 'machine' | 'vulnerability' | 'bulk-row';
  /** Why, naming the field and the rule. */
  reason: string;
  /** The record's id when it had a readable one. */
  id?: string;
  /** The device the record belongs to, for vulnerabilities. */
  machineId?: string;
}

export interface MachinePage {
  /** 0-based number of this request. */
  index: number;
  /** `$skip` of this request. */
  skip: number;
  /** Records that were new in this walk and valid, flagged ones included. */
  machines: Machine[];
  /** Records on the wire. */
  received: number;
  /** Records already returned (or reported invalid) by an earlier page of the same walk. */
  duplicates: number;
  /** Records skipped as invalid, not met before in the walk. */
  invalid: number;
}

export interface ListMachinesOptions {
  /**
   * `$top` per request, 1–10,000. Default 10,000 (the API's maximum: fewest calls of a 100/min quota). A
   * page that does not arrive whole within the request timeout (10,000 devices are ~15 MB: over 30 s on a
   * link below ~4 Mbit/s) is asked for again at once with half the `$top`, not below MIN_HALVED_PAGE_SIZE,
   * and the rest of the walk keeps the smaller page; one of MIN_HALVED_PAGE_SIZE or fewer is retried as any
   * call is. Otherwise every attempt would time out alike, each a call of the quota, and the walk never end.
   */
  pageSize?: number;
  /** Told each smaller `$top` the walk goes on with after a page timed out (see pageSize). */
  onPageSizeHalved?: (pageSize: number) => void;
  /**
   * Records each page re-reads of the previous one, default min(100, pageSize/20) (behind a short page, as
   * many, all of it when no longer than that). `$skip` paging is positional: a device removed between two requests shifts the rest
   * back, and without the overlap the device at the page edge would be missed for the cycle (and look
   * deleted). A page holding none of the records it re-reads (as many devices as the overlap, or more, left
   * meanwhile) fails the walk, retryably (see shiftedPage). Duplicates are dropped.
   */
  pageOverlap?: number;
  /**
   * Confirm a short page with one more request at its end, default true. A page shorter than `$top` means
   * the end; confirming costs one call per walk and guards against a page that came back short for
   * another reason, which would otherwise drop the rest of the fleet from the cycle.
   */
  confirmShortPage?: boolean;
  signal?: AbortSignal;
}

export interface MachineWalkDeps {
  api: ApiCaller;
  logger: Logger;
  azureTenantId: string;
  onInvalidRecord?: (record: InvalidRecord) => void;
}

function validatePageSize(pageSize: number): number {
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_MACHINE_PAGE_SIZE) {
    throw new DefenderError(
      DefenderErrorCode.INVALID_CONFIG,
      `pageSize must be a whole number from 1 to ${MAX_MACHINE_PAGE_SIZE} (got ${pageSize})`,
    );
  }
  return pageSize;
}

/** A machine record as read, with its id when it had a readable one (to name an invalid record). */
function machineEntry(raw: unknown): { parsed: ParseResult<MachineRecord>; id: string | undefined } {
  const id = (raw as { id?: unknown } | null)?.id;
  return { parsed: parseMachine(raw), id: typeof id === 'string' ? id : undefined };
}

/**
 * A page after the first of a paged read answered 404, or 200 with no record (`status` 200) where more were
 * expected: the read failed, retryably (it did not end).
 */
export function lostPage(path: string, index: number, azureTenantId: string, status = 404): DefenderError {
  const answer = status === 404 ? '404' : `an empty ${status}`;
  return new DefenderError(
    DefenderErrorCode.UNAVAILABLE,
    `The Defender API answered ${answer} for page ${index + 1} of ${path} after answering the first: the read is tried again rather than cut short`,
    { canRetry: true, details: { azureTenantId, path, status, page: index + 1 } },
  );
}

/**
 * A page holding none of the records it should re-read of the previous one: as many devices as the overlap, or
 * more, left between the two requests, and the rest moved before its `$skip`, so devices between the two pages
 * may not be listed. Taking the walk's end for the fleet would tombstone them: the listing fails, retryably.
 */
export function shiftedPage(path: string, index: number, azureTenantId: string): DefenderError {
  return new DefenderError(
    DefenderErrorCode.UNAVAILABLE,
    `Page ${index + 1} of ${path} holds none of the devices it re-reads of page ${index}: devices left between ` +
      'the two requests and some may have been passed over; the read is tried again rather than cut short',
    { canRetry: true, details: { azureTenantId, path, page: index + 1 } },
  );
}

/**
 * Two full pages in a row brought no record the walk had not read: the API is ignoring `$skip`. Taking what
 * was read for the fleet would tombstone the rest, and going on would loop for ever on the quota; the listing
 * fails, retryably, as any answer that cannot be the whole fleet does.
 */
export function repeatedPages(path: string, index: number, azureTenantId: string): DefenderError {
  return new DefenderError(
    DefenderErrorCode.UNAVAILABLE,
    `The Defender API answered pages ${index} and ${index + 1} of ${path} with only devices of earlier pages: ` +
      'it seems to ignore $skip; the read is tried again rather than cut short',
    { canRetry: true, details: { azureTenantId, path, page: index + 1 } },
  );
}

/**
 * The first page of `/api/machines` (`read`), asked once more when it answers 404. Microsoft's 404 there (no
 * machine found) has been seen answered for tenants with devices, to calls that succeed when asked again:
 * taken at its word, a listing would end with no device (a step towards tombstoning the whole fleet) and the
 * access test would tell an administrator the device list is empty. The fleet is empty only if the second
 * answer lists no device either (`listsDevices`); the second answer is the one kept.
 */
export async function readFirstMachinesPage<R extends { status: number }>(
  deps: Pick<MachineWalkDeps, 'logger' | 'azureTenantId'>,
  read: () => Promise<R>,
  listsDevices: (page: R) => boolean,
): Promise<R> {
  const first = await read();
  if (first.status !== 404) return first;
  const again = await read();
  if (listsDevices(again))
    deps.logger.warn('defender: /api/machines answered 404 for its first page, then listed devices', {
      azureTenantId: deps.azureTenantId,
    });
  return again;
}

/**
 * Walks `/api/machines` with `$top`/`$skip` (the API gives no next link with `$top`), one page at a time,
 * so a caller can emit batches without holding the fleet. Stops on a short page (confirmed, see
 * `confirmShortPage`) or an empty one (404, Microsoft's answer when no machine is found, on the first page
 * confirmed by one more request, or 200 with no record) where a page may be empty; a failure behind a page it
 * overlaps, on a page holding none of the records it overlaps (see shiftedPage), or behind two full pages
 * with nothing new (see repeatedPages).
 * Records are de-duplicated on `id` across the walk (only the ids are kept), validated one by one (an invalid
 * record is reported and skipped, never the page, and once per walk when it has a readable id) and flagged
 * when merged or excluded.
 */
export async function* walkMachines(
  deps: MachineWalkDeps,
  options: ListMachinesOptions = {},
): AsyncGenerator<MachinePage> {
  let pageSize = validatePageSize(options.pageSize ?? MAX_MACHINE_PAGE_SIZE);
  let overlap = Math.max(
    0,
    Math.min(options.pageOverlap ?? Math.min(100, Math.floor(pageSize / 20)), pageSize - 1),
  );
  /** The page at `skip`, at half the `$top` from now on while it does not arrive within the timeout. */
  const readPage = (skip: number) =>
    readHalvingOnTimeout(
      pageSize,
      MIN_HALVED_PAGE_SIZE,
      // Read row by row: only the normalised records stay, not the page's body and raw objects too.
      (top, onTimeout) =>
        deps.api.getRows(
          'machines',
          '/api/machines',
          { $top: top, $skip: skip },
          machineEntry,
          options.signal,
          undefined,
          onTimeout,
        ),
      (halved) => {
        pageSize = halved;
        overlap = Math.min(overlap, pageSize - 1);
        deps.logger.warn(
          'defender: a page of /api/machines did not arrive within the request timeout; asking for smaller pages',
          { azureTenantId: deps.azureTenantId, skip, pageSize },
        );
        options.onPageSizeHalved?.(pageSize);
      },
    );
  const confirm = options.confirmShortPage ?? true;
  const seen = new Set<string>();
  /**
   * Readable ids of the invalid records met: one read again (a page overlap, an API repeating itself) is
   * neither reported nor new again. Apart from `seen`, so a record fixed meanwhile is still listed.
   */
  const rejected = new Set<string>();
  let skip = 0;
  let staleFullPages = 0;
  // Whether this page may be empty: it re-reads nothing of the previous one (pages not overlapping, behind a
  // full page: a fleet an exact multiple of the page size).
  let mayBeEmpty = false;
  /** Readable ids of the records this page re-reads of the previous one: it must hold one of them. */
  let overlapped = new Set<string>();
  for (let index = 0; ; index++) {
    const result =
      index === 0
        ? await readFirstMachinesPage(
            deps,
            () => readPage(skip),
            (page) => page.status === 200 && page.rows.length > 0,
          )
        : await readPage(skip);
    const entries = result.status === 404 ? [] : result.rows;
    // An empty page, 404 (Microsoft's answer when no machine is found; a front end's 404, without its error
    // body, never gets here: see answers.ts) or 200 with no record (which Microsoft does not rule out for a
    // $skip past the end), is the end of the fleet on the first page, or where the page was expected to be
    // empty. Elsewhere (behind a page whose last devices this page overlaps: devices left meanwhile and the
    // rest moved before its $skip) the walk would end early and the devices not listed would be tombstoned
    // after a few cycles: the listing fails instead and is tried again. So does a page holding none of the
    // devices it overlaps: as many as the overlap or more left, and it may start past devices never read.
    if (entries.length === 0 && index > 0 && !mayBeEmpty)
      throw lostPage('/api/machines', index, deps.azureTenantId, result.status);
    if (entries.length > 0 && overlapped.size > 0 && !entries.some(({ id }) => id && overlapped.has(id)))
      throw shiftedPage('/api/machines', index, deps.azureTenantId);
    const page: MachinePage = {
      index,
      skip,
      machines: [],
      received: entries.length,
      duplicates: 0,
      invalid: 0,
    };
    let unreadable = 0;
    for (const { parsed, id } of entries) {
      if (!parsed.ok) {
        if (id && rejected.has(id)) {
          page.duplicates++;
          continue;
        }
        if (id) rejected.add(id);
        else unreadable++;
        page.invalid++;
        const invalid: InvalidRecord = { kind: 'machine', reason: parsed.reason, ...(id ? { id } : {}) };
        deps.logger.warn('defender: skipped an invalid machine record', {
          azureTenantId: deps.azureTenantId,
          ...invalid,
        });
        deps.onInvalidRecord?.(invalid);
        continue;
      }
      const record = parsed.value;
      if (seen.has(record.id)) {
        page.duplicates++;
        continue;
      }
      seen.add(record.id);
      page.machines.push({
        record,
        flags: { merged: Boolean(record.mergedIntoMachineId), excluded: record.isExcluded === true },
      });
    }
    // An invalid record without a readable id cannot be told from one read before: not counted as new, so a
    // repeated page of them cannot keep the walk going.
    const fresh = page.machines.length + page.invalid - unreadable;
    if (page.machines.length + page.invalid > 0) yield page;
    if (page.received === 0) return;
    const full = page.received >= pageSize;
    if (!full) {
      // Short page: the end, unless confirming it finds more (then it was short by accident).
      if (!confirm || fresh === 0) return;
    } else {
      if (fresh === 0 && ++staleFullPages >= 2)
        throw repeatedPages('/api/machines', index, deps.azureTenantId);
      if (fresh > 0) staleFullPages = 0;
    }
    // A short page is confirmed from within it too (all of it when no longer than the overlap): a small fleet
    // that lost a device meanwhile still answers the records left, and ends; only one that lost them all fails.
    const reread = full ? overlap : Math.min(overlap, page.received);
    overlapped = new Set(entries.slice(entries.length - reread).flatMap(({ id }) => (id ? [id] : [])));
    mayBeEmpty = reread === 0;
    skip += (full ? pageSize : page.received) - reread;
  }
}

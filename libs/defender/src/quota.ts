import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { sleep } from '@urs/resilience';
import type { DefenderApp } from './app-health';
import { DefenderError, DefenderErrorCode } from './errors';
import { duration, endedAtDeadline } from './token';

/** The MDE endpoints with a quota of their own. */
export type DefenderEndpointClass = 'machines' | 'vulnerabilities' | 'bulk' | 'exportFiles';

export interface QuotaWindow {
  /** Calls allowed per window. */
  limit: number;
  /** Window length in milliseconds (sliding). */
  windowMs: number;
}

export type QuotaLimits = Record<DefenderEndpointClass, readonly QuotaWindow[]>;

/**
 * Microsoft's documented limits per application and tenant (defender-api.md §1–3): machines 100/min and 1,500/h,
 * per-device vulnerabilities 50/min and 1,500/h, the bulk export 30/min and 1,000/h, the export's files
 * (`SoftwareVulnerabilitiesExport`, asked only for the snapshot's `generatedTime`) 5/min and 20/h.
 */
export const MICROSOFT_QUOTAS: QuotaLimits = Object.freeze({
  machines: [
    { limit: 100, windowMs: 60_000 },
    { limit: 1_500, windowMs: 3_600_000 },
  ],
  vulnerabilities: [
    { limit: 50, windowMs: 60_000 },
    { limit: 1_500, windowMs: 3_600_000 },
  ],
  bulk: [
    { limit: 30, windowMs: 60_000 },
    { limit: 1_000, windowMs: 3_600_000 },
  ],
  exportFiles: [
    { limit: 5, windowMs: 60_000 },
    { limit: 20, windowMs: 3_600_000 },
  ],
});

/**
 * Microsoft's longest quota window (an hour): no wait an app's quota asks for, and so no `Retry-After`
 * of a 429, is longer.
 */
export const LONGEST_QUOTA_WINDOW_MS = Math.max(
  ...Object.values(MICROSOFT_QUOTAS).flatMap((windows) => windows.map((w) => w.windowMs)),
);

/**
 * One call taken from a tenant's quota. Microsoft counts a call when it arrives, and the call may wait for
 * one of the shared slots between `acquire` and its sending (seconds, when other tenants keep the slots
 * busy): counted from `acquire`, the window would free that much early and the tenant's next call would
 * draw a 429. So the caller says when the call goes out.
 */
export interface QuotaClaim {
  /**
   * The call is being sent now: from this moment it counts in every window. Until then it counts as a call
   * still to come (for up to two windows after `acquire`). Never throws and is not awaited; if Redis cannot
   * be told, the call counts as sent one window after `acquire`.
   */
  sent(): void;
  /**
   * The call was never sent (stopped while it waited for a slot, refused by the tenant's hold-back, given no
   * slot by the limiter): its place in every window goes back at once, instead of counting as a call still to
   * come for two windows (two minutes of a per-minute window, two hours of the hourly one). Never throws and
   * is not awaited; if Redis cannot be told, the place frees two windows after `acquire`. Nothing after `sent`.
   */
  release(): void;
}

/**
 * A tenant's API quota, shared by every process. Microsoft counts it per application and tenant: each app
 * (`clientId`) registered in one Entra tenant has a quota of its own, and a 429 to one holds back none of
 * the others. `acquire` is called BEFORE taking one of the 10 call slots, so a tenant waiting for its quota
 * never holds a slot another tenant could use; the claim's `sent` is called once the slot is held, right
 * before the request.
 */
export interface QuotaGate {
  /**
   * Takes one call from the quota of `app` (its Entra tenant and application) for `endpoint`, waiting until
   * every window has room. With
   * `maxWaitMs`, a wait that would end later than that after the call (a block of a 429's Retry-After, an
   * hourly window spent) is not waited for: the call fails THROTTLED at once, not to be retried by itself,
   * its `retryAfterMs` the wait the quota asked for.
   */
  acquire(
    app: DefenderApp,
    endpoint: DefenderEndpointClass,
    signal?: AbortSignal,
    maxWaitMs?: number,
  ): Promise<QuotaClaim>;
  /** Holds every call of `app`'s `endpoint` back for `durationMs` (a 429's Retry-After), in every process. */
  block(app: DefenderApp, endpoint: DefenderEndpointClass, durationMs: number): Promise<void>;
}

export interface QuotaGateOptions {
  /** Limits per endpoint. Default: MICROSOFT_QUOTAS. */
  limits?: QuotaLimits;
  /** Longest single sleep while waiting for room, in milliseconds (then the window is checked again). Default 5000. */
  maxPollMs?: number;
}

/**
 * Sliding-window log: one sorted set per window, scored by Redis server time, so process clocks don't matter.
 * A block longer than the endpoint's longest window is cut down to it: only a poller that did not cap a 429's
 * Retry-After could have set it (see parseRetryAfterMs), and it would hold the tenant back for years.
 * A call taken and not sent yet is scored one window ahead: it stays counted however long it waits for a
 * slot (until `sent` scores it at its sending), and a call that never goes out (its process stopped) frees
 * its place two windows after it was taken.
 */
const ACQUIRE_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[2])
local blocked = redis.call('PTTL', KEYS[1])
if blocked > 0 then
  local longest = 0
  for i = 1, n do longest = math.max(longest, tonumber(ARGV[2 + i * 2])) end
  if longest > 0 and blocked > longest then
    redis.call('PEXPIRE', KEYS[1], longest)
    blocked = longest
  end
  return blocked
end
local wait = 0
for i = 1, n do
  local key = KEYS[i + 1]
  local limit = tonumber(ARGV[1 + i * 2])
  local window = tonumber(ARGV[2 + i * 2])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local entry = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local w = tonumber(entry[2]) + window - now
    if w < 1 then w = 1 end
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i = 1, n do
  local key = KEYS[i + 1]
  local window = tonumber(ARGV[2 + i * 2])
  redis.call('ZADD', key, now + window, ARGV[1])
  redis.call('PEXPIRE', key, 2 * window)
end
return 0
`;

/**
 * Puts a call's entry in every window (KEYS) at Redis's time now, its sending. One that waited for its slot
 * longer than two windows has been dropped as never sent, and comes back. Keys live two windows past their
 * last change, as long as a call still to come may count in them.
 */
const SENT_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], 2 * tonumber(ARGV[1 + i]))
end
return 0
`;

/** Takes a call never sent out of every window (KEYS). */
const RELEASE_SCRIPT = `
for i = 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 0
`;

/** Extends a block only if the new one ends later. */
const BLOCK_SCRIPT = `
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 0
`;

/** Who waits, and until when at the latest (`acquire`'s `maxWaitMs` from its call, as a `Date.now()`). */
interface Waiter {
  azureTenantId: string;
  endpoint: DefenderEndpointClass;
  signal: AbortSignal | undefined;
  waitUntil: number | undefined;
}

/** Told each wait the quota asks for (0 once the call has its place), so a stopped waiter can say it. */
type OnWait = (waitMs: number) => void;

async function waitForRoom(
  tryAcquire: () => Promise<number>,
  maxPollMs: number,
  waiter: Waiter,
  onWait: OnWait,
): Promise<void> {
  const { azureTenantId, endpoint, signal, waitUntil } = waiter;
  const since = Date.now();
  for (;;) {
    // Its caller was already told (see createWaitQueue); this ends the turn.
    if (signal?.aborted) throw stopped(waiter, since, undefined);
    const waitMs = await tryAcquire();
    onWait(Math.max(0, waitMs));
    if (waitMs <= 0) return;
    if (waitUntil !== undefined && waitMs > waitUntil - Date.now())
      throw heldBackLonger(azureTenantId, endpoint, waitMs);
    // A little jitter so processes woken by the same window edge do not race in lockstep.
    await sleep(Math.min(waitMs, maxPollMs) + Math.floor(Math.random() * 25), signal);
  }
}

const HELD_BACK_BY = "held back by its API quota (Microsoft's limits, or a 429's Retry-After)";

/**
 * A wait for the quota longer than the call may take. Not retried by the call (`canRetry` false): its caller
 * tries again once `retryAfterMs` is over.
 */
function heldBackLonger(
  azureTenantId: string,
  endpoint: DefenderEndpointClass,
  waitMs: number,
): DefenderError {
  return new DefenderError(
    DefenderErrorCode.THROTTLED,
    `Tenant ${azureTenantId}'s ${endpoint} calls are ${HELD_BACK_BY} for another ${Math.ceil(waitMs / 1000)} s`,
    { canRetry: false, retryAfterMs: waitMs, details: { azureTenantId, endpoint, quotaWaitMs: waitMs } },
  );
}

/**
 * A waiter whose caller stopped it. At a deadline (a signal of `AbortSignal.timeout`: the access test's time
 * limit) the quota is to blame, so it says for how long the quota still holds the tenant's calls back
 * (`heldUntil`, as a `Date.now()`, when a wait was asked for), in words an administrator can act on.
 */
function stopped(
  { azureTenantId, endpoint, signal }: Waiter,
  since: number,
  heldUntil: number | undefined,
): DefenderError {
  const details = { azureTenantId, endpoint };
  if (!signal || !endedAtDeadline(signal))
    return new DefenderError(
      DefenderErrorCode.THROTTLED,
      `A ${endpoint} call of tenant ${azureTenantId} was stopped while waiting for the tenant's API quota`,
      { canRetry: true, details },
    );
  const now = Date.now();
  const leftMs = heldUntil === undefined ? 0 : heldUntil - now;
  const notSent = `the call was not sent within the time allowed (it waited ${duration(now - since)})`;
  return leftMs > 0
    ? new DefenderError(
        DefenderErrorCode.THROTTLED,
        `Tenant ${azureTenantId}'s ${endpoint} calls are ${HELD_BACK_BY} for another ` +
          `${Math.ceil(leftMs / 1000)} s: ${notSent}`,
        { canRetry: true, retryAfterMs: leftMs, details: { ...details, quotaWaitMs: leftMs } },
      )
    : new DefenderError(
        DefenderErrorCode.THROTTLED,
        `Tenant ${azureTenantId}'s ${endpoint} calls were ${HELD_BACK_BY}: ${notSent}`,
        { canRetry: true, details },
      );
}

function deadlineOf(maxWaitMs: number | undefined): number | undefined {
  return maxWaitMs === undefined ? undefined : Date.now() + maxWaitMs;
}

/**
 * Runs the waits of one app's endpoint one after another in this process: only the oldest waiter
 * polls the window, so thousands of queued calls do not each poll Redis while a quota is exhausted, and
 * they are served in order. A waiter whose signal aborts leaves at once, told how long the quota last said
 * the endpoint is held back (also when it was still queued behind the waiter that asked). A wait that takes
 * its place after its waiter left (the take already sent: ioredis queues it while Redis fails over) gives
 * it back (`giveBack`): nobody would send or release the call, and it would hold one of the tenant's places
 * in every window for two windows (two hours of the hourly quota).
 */
function createWaitQueue(): (
  key: string,
  waiter: Waiter,
  wait: (onWait: OnWait) => Promise<void>,
  giveBack: () => void,
) => Promise<void> {
  const tails = new Map<string, Promise<void>>();
  /** Per key, until when (a `Date.now()`) the quota last said its calls wait. */
  const heldUntil = new Map<string, number>();
  return (key, waiter, wait, giveBack) => {
    const since = Date.now();
    const onWait: OnWait = (waitMs) => heldUntil.set(key, Date.now() + waitMs);
    const turn = (tails.get(key) ?? Promise.resolve()).then(() => wait(onWait));
    const tail = turn.catch(() => undefined);
    tails.set(key, tail);
    void tail.then(() => {
      if (tails.get(key) !== tail) return;
      tails.delete(key);
      heldUntil.delete(key);
    });
    const { signal } = waiter;
    if (!signal) return turn;
    if (signal.aborted) return Promise.reject(stopped(waiter, since, heldUntil.get(key)));
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => reject(stopped(waiter, since, heldUntil.get(key)));
      signal.addEventListener('abort', onAbort, { once: true });
      // Aborted, the waiter was told so at once (`onAbort`): the place is nobody's.
      turn
        .then(() => (signal.aborted ? giveBack() : resolve()), reject)
        .finally(() => signal.removeEventListener('abort', onAbort));
    });
  };
}

/**
 * Microsoft counts calls per application and tenant, whatever case their ids are written in: two
 * registrations of one directory and app, one in upper case, share one quota; another app of the directory
 * has its own. `<azureTenantId>:<clientId>`, in lower case.
 */
export function appQuotaId({ azureTenantId, clientId }: DefenderApp): string {
  return `${azureTenantId.toLowerCase()}:${clientId.toLowerCase()}`;
}

function quotaId(app: DefenderApp, endpoint: DefenderEndpointClass): string {
  return `${appQuotaId(app)}:${endpoint}`;
}

/**
 * The quota kept in Redis (keys `<prefix>defender:quota:<tenant>:<clientId>:<endpoint>:<windowMs>`), shared
 * by every process.
 */
export function createRedisQuotaGate(
  redis: Redis,
  keyPrefix: string,
  options: QuotaGateOptions = {},
): QuotaGate {
  const limits = options.limits ?? MICROSOFT_QUOTAS;
  const maxPollMs = options.maxPollMs ?? 5_000;
  const owner = randomUUID();
  const queue = createWaitQueue();
  let sequence = 0;
  const key = (app: DefenderApp, endpoint: DefenderEndpointClass, suffix: string): string =>
    `${keyPrefix}defender:quota:${quotaId(app, endpoint)}:${suffix}`;

  return {
    async acquire(app, endpoint, signal, maxWaitMs) {
      const waiter = { azureTenantId: app.azureTenantId, endpoint, signal, waitUntil: deadlineOf(maxWaitMs) };
      const windows = limits[endpoint];
      const windowKeys = windows.map((w) => key(app, endpoint, String(w.windowMs)));
      const keys = [key(app, endpoint, 'blocked'), ...windowKeys];
      const args = windows.flatMap((w) => [String(w.limit), String(w.windowMs)]);
      let member = '';
      const wait = (onWait: OnWait): Promise<void> =>
        waitForRoom(
          async () => {
            member = `${owner}:${++sequence}`;
            const result = await redis.eval(
              ACQUIRE_SCRIPT,
              keys.length,
              ...keys,
              member,
              String(windows.length),
              ...args,
            );
            return Number(result);
          },
          maxPollMs,
          waiter,
          onWait,
        );
      /**
       * Runs a claim's script once for the member its wait took, sent or released, whichever comes first; a
       * failing Redis is shrugged off.
       */
      let settled = false;
      const settle = (script: string, ...args: string[]): void => {
        if (settled || windowKeys.length === 0) return;
        settled = true;
        redis.eval(script, windowKeys.length, ...windowKeys, member, ...args).catch(() => undefined);
      };
      const release = (): void => settle(RELEASE_SCRIPT);
      await queue(quotaId(app, endpoint), waiter, wait, release);
      return { sent: () => settle(SENT_SCRIPT, ...windows.map((w) => String(w.windowMs))), release };
    },
    async block(app, endpoint, durationMs) {
      if (durationMs <= 0) return;
      await redis.eval(BLOCK_SCRIPT, 1, key(app, endpoint, 'blocked'), String(Math.ceil(durationMs)));
    },
  };
}

/** One call of the local gate: when it was taken and, once it went out, when it was sent. */
interface Call {
  takenAt: number;
  sentAt?: number;
}

/**
 * The same quota kept in this process's memory: for the CLI when Redis is not reachable, and for unit
 * tests. It cannot coordinate with other processes.
 */
export function createLocalQuotaGate(options: QuotaGateOptions & { now?: () => number } = {}): QuotaGate {
  const limits = options.limits ?? MICROSOFT_QUOTAS;
  const maxPollMs = options.maxPollMs ?? 5_000;
  const now = options.now ?? Date.now;
  /** Per app (tenant and client id) and endpoint: its calls, when each was taken and, once it went out, sent. */
  const calls = new Map<string, Call[]>();
  const blockedUntil = new Map<string, number>();
  const queue = createWaitQueue();

  /**
   * Where a call stands in a window of `windowMs`: at its sending, or one window ahead while it waits for
   * its slot (as in the Redis gate); undefined once it left the window, or was never sent two windows on.
   */
  function stamp(call: Call, windowMs: number, t: number): number | undefined {
    const at = call.sentAt ?? call.takenAt + windowMs;
    return at > t - windowMs ? at : undefined;
  }

  /** 0 with the call taken, or the milliseconds to wait. */
  function tryAcquire(id: string, windows: readonly QuotaWindow[], taken: Call): number {
    const t = now();
    const blocked = (blockedUntil.get(id) ?? 0) - t;
    if (blocked > 0) return blocked;
    const longest = Math.max(0, ...windows.map((w) => w.windowMs));
    const log = (calls.get(id) ?? []).filter((call) => stamp(call, longest, t) !== undefined);
    calls.set(id, log);
    let wait = 0;
    for (const w of windows) {
      const times = log
        .map((call) => stamp(call, w.windowMs, t))
        .filter((at): at is number => at !== undefined)
        .sort((a, b) => a - b);
      // The window frees when the oldest of its newest `limit` calls leaves it.
      if (times.length >= w.limit)
        wait = Math.max(wait, (times[times.length - w.limit] as number) + w.windowMs - t, 1);
    }
    if (wait > 0) return wait;
    taken.takenAt = t;
    log.push(taken);
    return 0;
  }

  return {
    async acquire(app, endpoint, signal, maxWaitMs) {
      const id = quotaId(app, endpoint);
      const taken: Call = { takenAt: 0 };
      const waiter = { azureTenantId: app.azureTenantId, endpoint, signal, waitUntil: deadlineOf(maxWaitMs) };
      let settled = false;
      const release = (): void => {
        if (settled) return;
        settled = true;
        calls.set(
          id,
          (calls.get(id) ?? []).filter((call) => call !== taken),
        );
      };
      await queue(
        id,
        waiter,
        (onWait) =>
          waitForRoom(async () => tryAcquire(id, limits[endpoint], taken), maxPollMs, waiter, onWait),
        release,
      );
      return {
        sent() {
          if (settled) return;
          settled = true;
          taken.sentAt = now();
          const log = calls.get(id) ?? [];
          if (!log.includes(taken)) log.push(taken);
          calls.set(id, log);
        },
        release,
      };
    },
    async block(app, endpoint, durationMs) {
      const id = quotaId(app, endpoint);
      blockedUntil.set(id, Math.max(blockedUntil.get(id) ?? 0, now() + durationMs));
    },
  };
}

/** The claim of a gate that counts nothing. */
const NOTHING_TO_MOVE: QuotaClaim = Object.freeze({ sent: () => undefined, release: () => undefined });

/** A gate that never waits: for an API without quotas (the simulator with its quotas off). */
export const UNLIMITED_QUOTA_GATE: QuotaGate = Object.freeze({
  acquire: async () => NOTHING_TO_MOVE,
  block: async () => undefined,
});

/**
 * The gate of a service's Defender calls: Microsoft's quotas per application and tenant kept in Redis (shared by every
 * replica), or none when the API answering is a simulator with its quotas off (`URS_DEFENDER_QUOTAS=off`).
 */
export function quotaGateFor(mode: 'microsoft' | 'off', redis: Redis, keyPrefix: string): QuotaGate {
  return mode === 'off' ? UNLIMITED_QUOTA_GATE : createRedisQuotaGate(redis, keyPrefix);
}

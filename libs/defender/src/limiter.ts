import Bottleneck from 'bottleneck';
import type { Redis } from 'ioredis';
import type { Logger } from '@urs/logging';
import { closeRedis } from '@urs/store';
import type { Gauge, Registry } from '@urs/telemetry';
import { withBulkCap, withDegradedCap } from './bulk-cap';
import { DEGRADED_CALLS_LIMIT } from './degraded-calls';
import { withSlotHandOff, type SlotHandOffOptions } from './handoff';
import type { Slots } from './slots';
import { redisClock } from './redis-clock';

export interface ScheduleOptions {
  /**
   * The task has no deadline of its own and runs until its slot ends if it must (a bulk export page): it
   * starts only at the start of a slot, never in one a call before it held (withSlotHandOff), so it has the
   * slot's whole time.
   */
  wholeSlot?: boolean;
  /**
   * The caller stops waiting: while the task waits for its slot, its promise rejects at once with the
   * signal's reason and the task never runs (a stop does not wait for a slot other processes hold).
   */
  signal?: AbortSignal | undefined;
  /**
   * The task is a call of a degraded tenant (its last call failed slowly, see CallHealth): a shared limiter takes
   * it a place under the cap on such calls of every process (`degradedMaxSlots`) before its slot, and gives both
   * back together. While it waits for that place, the signal aborting ends the wait (its promise rejects with the
   * signal's reason, the task never runs); once it has the place, only `signal` ends its wait for the slot. A
   * limiter of this process only ignores it.
   */
  degraded?: AbortSignal | undefined;
  /** Told once a `degraded` task has its place under the cap, before it waits for its slot. */
  degradedPlaced?: (() => void) | undefined;
}

/** The slots of MDE calls in flight. */
export interface CallLimiter {
  /**
   * Runs `task` in a slot; the slot is released when it settles, or after the job expiration at the latest.
   * `slotEnds` aborts shortly before that expiration: the task must stop its call then, or the call would go
   * on beside a slot the limiter already counts as free, one call more in flight than the limit.
   */
  schedule<T>(task: (slotEnds: AbortSignal) => Promise<T>, options?: ScheduleOptions): Promise<T>;
  /** Stops the limiter and releases its connections. Idempotent. */
  close(): Promise<void>;
  /**
   * Shared limiters: whether this process may keep `held` slots past their lease (withSlotHandOff): no other
   * process has calls waiting for a slot, and the shared count still holds this process's slots.
   */
  mayKeep?(held: number): Promise<boolean>;
}

export interface SharedLimiterOptions {
  /**
   * An ioredis client. The limiter duplicates it (two connections of its own: commands and pub/sub), so
   * closing the limiter never closes the caller's client; the duplicates take its options, so one made by
   * `createRedis` (@urs/store) gives them its reconnect on READONLY, which a failover needs.
   */
  redis: Redis;
  /**
   * Prefix of the limiter's id; Bottleneck's keys are `b_<prefix>defender-api_*`. Services give their
   * URS_REDIS_PREFIX: the processes of one deployment share one limit, deployments sharing a Redis under
   * different prefixes have one each. Tests use a unique one.
   */
  keyPrefix: string;
  /** Calls in flight across every process sharing the limiter. Default 10. */
  maxConcurrent?: number;
  /**
   * At most this many of the `maxConcurrent` slots held by whole-slot calls (bulk export pages, each holding
   * its slot until the page ends) at once, across every process that sets it (withBulkCap: a second shared
   * limiter, Bottleneck's keys `b_<prefix>defender-bulk_*`), so that tenants read in bulk never hold every
   * slot and the per-device calls of other tenants always have `maxConcurrent - bulkMaxSlots`. 1 to
   * `maxConcurrent`. Unset, whole-slot calls are not capped here (a process making none: the poller, the
   * registrar), and the stored cap is left as it is. Written to Redis like `maxConcurrent` (unless
   * `joinStoredSettings`): every process that sets it must set the same.
   */
  bulkMaxSlots?: number;
  /**
   * At most this many of the `maxConcurrent` slots held at once by the calls of degraded tenants (those asking
   * with ScheduleOptions.degraded: their tenant's last call failed slowly, see CallHealth), across every process
   * sharing the limiter (withDegradedCap: a third shared limiter, Bottleneck's keys `b_<prefix>defender-degraded_*`):
   * however many tenants of however many processes fail together, each call holding its slot for a whole
   * request timeout, the healthy tenants' calls keep the other slots. A call that waits for one of these places
   * holds no slot meanwhile, and the calls of healthy tenants never ask for one (no round trip to Redis more).
   * 1 to `maxConcurrent`, default DEGRADED_CALLS_LIMIT (2). Written to Redis like `maxConcurrent` (unless
   * `joinStoredSettings`): every process must set the same.
   */
  degradedMaxSlots?: number;
  /**
   * How long a job may hold a slot, in milliseconds, default 60000. A crashed process's slots come back only
   * through this expiration, so it is always set. A call still running when its slot ends (an answer that
   * keeps arriving, too slowly for the request's idle timeout to fire) is stopped just before, so a slot is
   * never released while its call is in flight; keep it well above the request timeout, so only such calls are.
   */
  jobExpirationMs?: number;
  /** TTL of the limiter's Redis keys after the last use, in milliseconds. Default 3600000. */
  keyTtlMs?: number;
  /**
   * When set, a slot whose call ended goes straight to the next call waiting in this process (withSlotHandOff)
   * for at most `maxLeaseMs` (default 1000) before it goes back to the shared limiter, unless no other process
   * waits for a slot: then the lease goes on, up to `maxHoldMs` (default 20000) in all. Keep that plus the
   * request timeout below `jobExpirationMs`. Without it (the default) every call asks Redis for a slot, and the
   * round trips between calls leave slots idle. The price: if the limiter's Redis keys are lost, a slot taken
   * before the loss keeps serving calls for up to `maxLeaseMs` beside the slots handed out afresh.
   */
  handOff?: SlotHandOffOptions;
  /**
   * Join the limiter with the settings stored in Redis and never write them (the CLI): a run without the
   * deployment's `maxConcurrent` would otherwise set every process's limit to its own. Unset (the services),
   * the limiter writes its `maxConcurrent`, with a warning when that changes the stored one.
   */
  joinStoredSettings?: boolean;
  /**
   * How often the shared running count is checked against the jobs it counts, and the offset of Redis's clock
   * from this process's measured again (the jobs' expirations are counted on Redis's), in milliseconds.
   * Default 5000.
   */
  reconcileEveryMs?: number;
  /**
   * Where the gauges of the shared slots go (`urs_defender_slots_running`, `urs_defender_slots_max`; those of
   * the degraded tenants' cap, `urs_defender_degraded_slots_running`, `urs_defender_degraded_slots_max` and
   * `urs_defender_degraded_slots_waiting`; with `bulkMaxSlots`, `urs_defender_bulk_slots_running`,
   * `urs_defender_bulk_slots_max` and `urs_defender_bulk_slots_waiting`).
   */
  metrics?: Registry;
  logger: Logger;
}

/**
 * What Redis 7 puts before the error replies of Bottleneck's Lua scripts that Bottleneck compares exactly:
 * `SETTINGS_KEY_NOT_FOUND` and `UNKNOWN_CLIENT` (RedisDatastore.runScript, `e.message === ...`) and
 * `OVERWEIGHT:<weight>:<maxConcurrent>` (RedisDatastore.__submit__, `indexOf(...) === 0`).
 */
const REDIS7_PREFIX_OF_BOTTLENECK_ERRORS = /^ERR (?=(?:SETTINGS_KEY_NOT_FOUND|UNKNOWN_CLIENT)$|OVERWEIGHT:)/;

type ScriptCallback = (error: Error | null, replies?: unknown) => void;
type ScriptArgs = (name: string, id: string, args: unknown[], callback: ScriptCallback) => unknown[];

/**
 * Puts `wrap(original)` in place of the connection's `__scriptArgs__`, through which Bottleneck 2.19.5's
 * RedisDatastore.runScript passes the arguments and the callback of each of its Lua scripts. False when this
 * Bottleneck has no such hook.
 */
function wrapScriptArgs(connection: object, wrap: (original: ScriptArgs) => ScriptArgs): boolean {
  const hook = connection as { __scriptArgs__?: unknown };
  const original = hook.__scriptArgs__;
  if (typeof original !== 'function') return false;
  hook.__scriptArgs__ = wrap((original as ScriptArgs).bind(connection));
  return true;
}

/**
 * Makes Bottleneck 2.19.5 recover from the loss of its Redis keys again (FLUSHALL, a Redis restart without
 * persistence, key expiry). Its Lua scripts answer `redis.error_reply('SETTINGS_KEY_NOT_FOUND')` /
 * `('UNKNOWN_CLIENT')`, and RedisDatastore.runScript recovers by re-running `init` / `register_client`, then the
 * script, but only when `e.message` equals the bare word. Since Redis 7, an error reply with no error code of its
 * own (no space) comes back as `ERR SETTINGS_KEY_NOT_FOUND`, so the recovery never runs and every job fails until
 * the process restarts (SGrondin/bottleneck#205, #219; Bottleneck is unmaintained). runScript gets the callback of
 * each script call from the connection's `__scriptArgs__`; this wraps it so the callback sees the message without
 * the `ERR `. The error object itself is kept (its class and stack). Returns false, after a warning, when this
 * Bottleneck has no such hook: the limiter still works, it just does not survive lost keys.
 */
export function recogniseBottleneckErrorsOnRedis7(connection: object, logger: Logger): boolean {
  const wrapped = wrapScriptArgs(
    connection,
    (scriptArgs) => (name, id, args, callback) =>
      scriptArgs(name, id, args, (error, replies) => {
        if (error != null && typeof error.message === 'string') {
          error.message = error.message.replace(REDIS7_PREFIX_OF_BOTTLENECK_ERRORS, '');
        }
        callback(error, replies);
      }),
  );
  if (!wrapped) {
    logger.warn(
      'defender limiter: Bottleneck has no __scriptArgs__ hook; if its Redis keys are lost, calls fail until restart',
    );
  }
  return wrapped;
}

/**
 * Runs Bottleneck 2.19.5's Lua scripts on `now` (Redis's clock) instead of this process's. RedisDatastore.runScript
 * gives each script `Date.now()` as its first argument, and the scripts count every job's expiration by it: a job
 * registered at `now` expires at `now + expiration`, and each script (every process's heartbeat too) frees the
 * jobs whose expiration is before its own `now`. A host whose clock runs seconds ahead would free another host's
 * job that much early, while its call still runs (stopped only at its own slot's end): one call more in flight
 * than the limit. Returns false, after a warning, when this Bottleneck has no such hook.
 */
export function runBottleneckScriptsOnClock(connection: object, now: () => number, logger: Logger): boolean {
  const wrapped = wrapScriptArgs(
    connection,
    (scriptArgs) => (name, id, args, callback) => scriptArgs(name, id, [now(), ...args.slice(1)], callback),
  );
  if (!wrapped) {
    logger.warn(
      "defender limiter: Bottleneck has no __scriptArgs__ hook; jobs expire by each host's clock, not Redis's",
    );
  }
  return wrapped;
}

/** The id under which Bottleneck 2.19.5's Redis datastore counts this limiter's jobs (`_store.clientId`). */
function bottleneckClientId(limiter: Bottleneck): string | undefined {
  const store = (limiter as unknown as { _store?: { clientId?: unknown } })._store;
  return typeof store?.clientId === 'string' ? store.clientId : undefined;
}

/** The two ioredis clients of Bottleneck 2.19.5's connection (`client`, and `subscriber` for pub/sub). */
function bottleneckClients(connection: object): Redis[] {
  const { client, subscriber } = connection as { client?: Redis; subscriber?: Redis };
  return [client, subscriber].filter((redis): redis is Redis => redis !== undefined);
}

/** What `logConnectionErrors` needs of Bottleneck's connection (a stand-in in the unit tests). */
export interface ConnectionErrors {
  on(event: 'error', listener: (error: Error) => void): void;
}

/**
 * Logs the errors of Bottleneck's connection, the first of each outage only, as the service's own Redis
 * client does (`watchRedis`): both of its clients emit one per reconnect attempt while Redis is away (every
 * 200 ms to 5 s), some 1,400 lines an hour. The outage ends once both clients are ready again.
 */
export function logConnectionErrors(connection: ConnectionErrors, logger: Logger): void {
  let logged = false;
  connection.on('error', (error) => {
    if (logged) return;
    logged = true;
    logger.error('defender limiter: Redis connection error', {
      error: { name: error.name, code: (error as { code?: unknown }).code, message: error.message },
    });
  });
  const clients = bottleneckClients(connection);
  for (const redis of clients)
    redis.on('ready', () => {
      if (clients.every((client) => client.status === 'ready')) logged = false;
    });
}

/**
 * Fails the commands a connection had sent when it closed, rather than send them again on the next one
 * (ioredis's `autoResendUnfulfilledCommands`, on by default). Redis may have run a command whose reply was
 * lost, and Bottleneck's scripts do not check for that: a `register` run twice counts its job twice while
 * `free` gives back one, a slot lost for good. Failed, the script is what README's "Redis refuses writes"
 * describes: a `register` that ran holds its slot until its job expiration and the job waits for the next
 * heartbeat, a `free` holds its slot until the expiration, a `submit` fails its call. Without the re-send
 * ioredis drops those commands and their promises never settle (with `maxRetriesPerRequest: null`), which
 * would stop the limiter's register lock for good; so they are failed here, as the connection closes.
 */
export function failUnansweredCommands(redis: Redis): void {
  redis.options.autoResendUnfulfilledCommands = false;
  // ioredis emits `close` on the tick after its own close handler, which kept the commands sent (its
  // `commandQueue`) to send again; the next connection, at least one retry delay later, starts a new queue.
  redis.on('close', () => {
    for (let item = redis.commandQueue.shift(); item !== undefined; item = redis.commandQueue.shift()) {
      item.command.reject(
        new Error('Connection is closed before Redis answered; the command is not sent again.'),
      );
    }
  });
}

/**
 * Sets the shared `running` count to the sum of the weights of the jobs it counts (`job_weights`), and each
 * client's (`client_running`) to its jobs' (`job_clients`), when they disagree; returns the count before and
 * after, and `maxConcurrent`. Bottleneck changes them together in each of its scripts, so they disagree only
 * when a script ran twice (a re-sent `register`). Nothing when the keys are gone (Bottleneck re-creates them);
 * the keys' TTL is left as it is.
 */
const RECONCILE_SLOTS_LUA = `
local settings = redis.call('hmget', KEYS[1], 'running', 'maxConcurrent')
if not settings[1] then return false end
local running = tonumber(settings[1])
local total = 0
local byClient = {}
local weights = redis.call('hgetall', KEYS[2])
for i = 1, #weights, 2 do
  local weight = tonumber(weights[i + 1]) or 0
  total = total + weight
  local client = redis.call('hget', KEYS[3], weights[i])
  if client then byClient[client] = (byClient[client] or 0) + weight end
end
local clients = redis.call('zrange', KEYS[4], 0, -1, 'withscores')
for i = 1, #clients, 2 do
  local own = byClient[clients[i]] or 0
  if tonumber(clients[i + 1]) ~= own then redis.call('zadd', KEYS[4], own, clients[i]) end
end
if running ~= total then redis.call('hset', KEYS[1], 'running', total) end
return {running, total, settings[2] or ''}
`;

type ReconcileSlots = (...keys: string[]) => Promise<[number, number, string] | null>;

/** The gauges of one shared limiter's count and limit. */
interface SlotGauges {
  running: Gauge;
  max: Gauge;
}

function mainSlotGauges(metrics: Registry): SlotGauges {
  return {
    running: metrics.gauge(
      'urs_defender_slots_running',
      'Defender API calls in flight across every process sharing the limiter, as its Redis count says.',
    ),
    max: metrics.gauge(
      'urs_defender_slots_max',
      'The limit of Defender API calls in flight across every process (the stored maxConcurrent).',
    ),
  };
}

function degradedSlotGauges(metrics: Registry): SlotGauges {
  return {
    running: metrics.gauge(
      'urs_defender_degraded_slots_running',
      "Places of degraded tenants' calls held across every process, as the degraded cap's Redis count says: calls of degraded tenants holding a shared slot, and those holding a place while they wait for one.",
    ),
    max: metrics.gauge(
      'urs_defender_degraded_slots_max',
      'The most shared slots the calls of degraded tenants may hold at once across every process (the stored degraded cap).',
    ),
  };
}

function bulkSlotGauges(metrics: Registry): SlotGauges {
  return {
    running: metrics.gauge(
      'urs_defender_bulk_slots_running',
      "Places under the bulk cap held across every process, as the bulk cap's Redis count says: bulk export pages holding a shared slot, and those holding a place while they wait for one.",
    ),
    max: metrics.gauge(
      'urs_defender_bulk_slots_max',
      'The most shared slots bulk export pages may hold at once across every process (the stored bulk cap).',
    ),
  };
}

/**
 * Returns what reconciles the shared running count (RECONCILE_SLOTS_LUA) once and logs the slots it gave
 * back. Waiting calls see them at the next heartbeat (every process's publishes the capacity).
 */
function slotsReconciler(
  client: Redis,
  keyOf: (name: string) => string,
  logger: Logger,
  gauges: SlotGauges | undefined,
  what = 'running',
): () => void {
  client.defineCommand('ursReconcileSlots', { numberOfKeys: 4, lua: RECONCILE_SLOTS_LUA });
  const reconcile = (client as unknown as { ursReconcileSlots: ReconcileSlots }).ursReconcileSlots.bind(
    client,
  );
  const runningGauge = gauges?.running;
  const maxGauge = gauges?.max;
  /** The gauges left out until the count is read again: their last value would show slots as they were. */
  const forget = (): void => {
    runningGauge?.remove();
    maxGauge?.remove();
  };
  return () => {
    reconcile(keyOf('settings'), keyOf('job_weights'), keyOf('job_clients'), keyOf('client_running')).then(
      (reply) => {
        // The keys are gone (a Redis flushed): no count until Bottleneck writes them again.
        if (reply === null) return forget();
        const [before, after, max] = reply;
        if (before !== after) {
          logger.warn(
            `defender limiter: the shared ${what} count was ${before} for jobs of ${after}; gave back the difference`,
            {
              slots: before - after,
            },
          );
        }
        runningGauge?.set(after);
        if (max !== '') maxGauge?.set(Number(max));
      },
      // The heartbeat's and the calls' own failures say Redis is away; this one would only repeat them.
      forget,
    );
  };
}

/**
 * The reason of a `slotEnds` abort: the slot was held for as long as the limiter lets a job hold one
 * (`heldMs`); a task handed the slot by a call before it (withSlotHandOff) ran for less of it.
 */
export class SlotEndedError extends Error {
  constructor(readonly heldMs: number) {
    super(`the call slot ended after ${heldMs} ms`);
    this.name = 'SlotEndedError';
  }
}

/**
 * Runs `task` with a `slotEnds` signal that aborts `endsAfterMs` after it starts. Bottleneck only stops counting
 * an expired job; the task's HTTP call would go on.
 */
function untilSlotEnds<T>(task: (slotEnds: AbortSignal) => Promise<T>, endsAfterMs: number): Promise<T> {
  const ends = new AbortController();
  const timer = setTimeout(() => ends.abort(new SlotEndedError(endsAfterMs)), endsAfterMs);
  return task(ends.signal).finally(() => clearTimeout(timer));
}

/**
 * How long before the job expiration a task is told to stop: Redis counts the expiration from the job's
 * registration, a little before the job starts here, and the call needs a moment to be torn down.
 */
function slotEndMarginMs(jobExpirationMs: number): number {
  return Math.min(1_000, Math.floor(jobExpirationMs / 10));
}

/** How long after its start a task is told its slot ends (`slotEnds`). */
function slotEndsAfterMs(jobExpirationMs: number): number {
  return jobExpirationMs - slotEndMarginMs(jobExpirationMs);
}

/**
 * Schedules `task` in Bottleneck, leaving the wait when `signal` aborts: Bottleneck cannot take a queued job
 * back, so the job, once it gets its slot, gives it straight back without running the task.
 */
function scheduleUnlessStopped<T>(
  limiter: Bottleneck,
  jobExpirationMs: number,
  task: (slotEnds: AbortSignal) => Promise<T>,
  signal: AbortSignal | undefined,
): Promise<T> {
  const endsAfterMs = slotEndsAfterMs(jobExpirationMs);
  if (!signal)
    return limiter.schedule({ expiration: jobExpirationMs }, () => untilSlotEnds(task, endsAfterMs));
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const stop = (): void => reject(signal.reason);
    signal.addEventListener('abort', stop, { once: true });
    limiter
      .schedule({ expiration: jobExpirationMs }, async () => {
        if (signal.aborted) return undefined;
        signal.removeEventListener('abort', stop);
        return untilSlotEnds(task, endsAfterMs);
      })
      .then(resolve as (value: T | undefined) => void, reject)
      .finally(() => signal.removeEventListener('abort', stop));
  });
}

function wrap(limiter: Bottleneck, jobExpirationMs: number, release: () => Promise<void>): CallLimiter {
  let closing: Promise<void> | undefined;
  return {
    schedule: (task, options) => scheduleUnlessStopped(limiter, jobExpirationMs, task, options?.signal),
    close() {
      closing ??= release();
      return closing;
    },
  };
}

/**
 * One Bottleneck limiter in Redis, shared by every process that uses the same id: `maxConcurrent` is
 * enforced through the shared `running` counter. Never `clearDatastore` (it would reset the counter of
 * the running cluster). The stored settings win over the code's, so `maxConcurrent` is written back once
 * the limiter is ready (updateSettings does not touch the running counter), unless `joinStoredSettings`.
 */
export async function createSharedLimiter(options: SharedLimiterOptions): Promise<CallLimiter> {
  const maxConcurrent = options.maxConcurrent ?? 10;
  const jobExpirationMs = options.jobExpirationMs ?? 60_000;
  // Before any connection is made: a refused cap leaves nothing open.
  if (options.bulkMaxSlots !== undefined) validCap('bulkMaxSlots', options.bulkMaxSlots, maxConcurrent);
  const degradedMaxSlots = options.degradedMaxSlots ?? Math.min(DEGRADED_CALLS_LIMIT, maxConcurrent);
  validCap('degradedMaxSlots', degradedMaxSlots, maxConcurrent);
  // Not lazy: Bottleneck duplicates this client again for pub/sub and waits for both to be ready.
  const client = options.redis.duplicate({ lazyConnect: false });
  const connection = new Bottleneck.IORedisConnection({ client });
  // After the connection made its subscriber from the client: the subscriber's SUBSCRIBEs are safe to send
  // again, and one failed would leave the limiter deaf to its channel.
  failUnansweredCommands(client);
  logConnectionErrors(connection, options.logger);
  recogniseBottleneckErrorsOnRedis7(connection, options.logger);
  const clock = redisClock(client);
  await clock.measure();
  runBottleneckScriptsOnClock(connection, clock.now, options.logger);
  const joined = {
    connection,
    client,
    keyPrefix: options.keyPrefix,
    keyTtlMs: options.keyTtlMs ?? 3_600_000,
    joinStoredSettings: options.joinStoredSettings ?? false,
    logger: options.logger,
  };
  const limiter = await sharedBottleneck(joined, 'defender-api', maxConcurrent, 'calls in flight');
  const keyOf = (name: string): string => `b_${options.keyPrefix}defender-api_${name}`;
  const reconcilers = [
    slotsReconciler(client, keyOf, options.logger, options.metrics && mainSlotGauges(options.metrics)),
  ];
  // Whole-slot calls take a place under the cap, a limiter of its own on the same connection, before a slot.
  const bulkCap =
    options.bulkMaxSlots === undefined
      ? undefined
      : await sharedBottleneck(joined, 'defender-bulk', options.bulkMaxSlots, 'slots of bulk export pages');
  if (bulkCap) {
    const bulkKeyOf = (name: string): string => `b_${options.keyPrefix}defender-bulk_${name}`;
    reconcilers.push(
      slotsReconciler(
        client,
        bulkKeyOf,
        options.logger,
        options.metrics && bulkSlotGauges(options.metrics),
        'bulk',
      ),
    );
  }
  // So do the calls of degraded tenants, under a cap of their own, before that one.
  const degradedCap = await sharedBottleneck(
    joined,
    'defender-degraded',
    degradedMaxSlots,
    "slots of degraded tenants' calls",
  );
  const degradedKeyOf = (name: string): string => `b_${options.keyPrefix}defender-degraded_${name}`;
  reconcilers.push(
    slotsReconciler(
      client,
      degradedKeyOf,
      options.logger,
      options.metrics && degradedSlotGauges(options.metrics),
      'degraded',
    ),
  );
  const timer = setInterval(() => {
    for (const reconcile of reconcilers) reconcile();
    void clock.measure();
  }, options.reconcileEveryMs ?? 5_000);
  timer.unref();
  const shared: CallLimiter = wrap(limiter, jobExpirationMs, async () => {
    clearInterval(timer);
    // Stops the heartbeat and leaves the limiter's channels. Bottleneck's own disconnect(true) would then
    // QUIT both connections with no bound: while Redis is away the QUIT waits in ioredis's offline queue, and
    // the service's stop with it, until the stop times out. closeRedis bounds the QUIT.
    await Promise.all([limiter.disconnect(false), bulkCap?.disconnect(false), degradedCap.disconnect(false)]);
    await Promise.all(bottleneckClients(connection).map((redis) => closeRedis(redis)));
    // Marks the connection ended (its clients are): Bottleneck sends nothing more on it.
    await connection.disconnect(false);
  });
  const clientId = bottleneckClientId(limiter);
  if (clientId !== undefined) {
    // Bottleneck keeps, per client, the jobs submitted and not yet running (hash) and the jobs running (zset).
    const queuedKey = keyOf('client_num_queued');
    const runningKey = keyOf('client_running');
    shared.mayKeep = async (held) => {
      const [[queuedError, queued], [runningError, running]] = (await client
        .pipeline()
        .hgetall(queuedKey)
        .zscore(runningKey, clientId)
        .exec()) as [[Error | null, Record<string, string>], [Error | null, string | null]];
      if (queuedError || runningError) return false;
      const othersWait = Object.entries(queued).some(
        ([other, count]) => other !== clientId && Number(count) > 0,
      );
      // Fewer running than held: the keys were lost and the count started afresh without these slots.
      return !othersWait && Number(running ?? 0) >= held;
    };
  } else if (options.handOff) {
    options.logger.warn('defender limiter: Bottleneck has no client id; hand-off leases are never renewed');
  }
  const slots = options.handOff ? withSlotHandOff(shared, options.handOff) : shared;
  // A degraded tenant's call takes its degraded place first, then (a bulk export page) its place under the bulk
  // cap, then its slot: while it waits for its degraded place it holds neither of the others.
  const bulkCapped = bulkCap ? withPlaceCap(slots, bulkCap, jobExpirationMs, 'bulk', options.metrics) : slots;
  return withPlaceCap(bulkCapped, degradedCap, jobExpirationMs, 'degraded', options.metrics);
}

/**
 * `slots` with a cap of places taken before a slot (`cap`, a shared limiter): whole-slot calls' (bulk) or degraded
 * tenants' calls' (degraded), with the gauge of this process's calls waiting for a place.
 */
function withPlaceCap(
  slots: Slots,
  cap: Bottleneck,
  jobExpirationMs: number,
  kind: 'bulk' | 'degraded',
  metrics: Registry | undefined,
): Slots {
  // The cap's place is held while its call waits for what is inside it (a degraded call's: the bulk cap, then a
  // slot), then for the slot's whole time: it lasts longer.
  const placeExpirationMs = CAP_EXPIRATION_SLOTS[kind] * jobExpirationMs;
  const places = wrap(cap, placeExpirationMs, async () => undefined);
  const waiting =
    kind === 'bulk'
      ? metrics?.gauge(
          'urs_defender_bulk_slots_waiting',
          "Bulk export pages of this process waiting for a place under the bulk cap (URS_BULK_MAX_SLOTS) before they ask for a shared slot; a degraded tenant's page waits here with its place among the degraded tenants' calls held.",
        )
      : metrics?.gauge(
          'urs_defender_degraded_slots_waiting',
          "Calls of this process's degraded tenants waiting for a place under the install-wide cap on degraded tenants' calls before they ask for a shared slot (a bulk export page, before it asks for its place under the bulk cap).",
        );
  waiting?.set(0);
  const times = { placeMs: slotEndsAfterMs(placeExpirationMs), slotMs: jobExpirationMs };
  const waits = waiting && { waiting: (by: 1 | -1) => waiting.inc({}, by) };
  return kind === 'bulk'
    ? withBulkCap(slots, places, times, waits)
    : withDegradedCap(slots, places, times, waits);
}

/**
 * How many job expirations of the shared slots a place under a cap lasts: its call's waits inside it, then the
 * slot's own. The waits have no bound of their own (the call queues in this process behind per-device calls), and
 * a call whose place has less than a slot left when its slot comes asks for a place again, at the back of the
 * queue: a place long enough for most waits spares those turns. A degraded tenant's place is taken outermost
 * (degraded, then bulk, then slot: withDegradedCap), so a degraded tenant's bulk export page holds it through its
 * wait for a place under the bulk cap and that place's own time: it lasts at least as long as a bulk place, or
 * a page queued behind other tenants' pages would give it back and queue again for ever. The price: a crashed
 * process's places come back only when they expire, this many slot expirations later (ten minutes at a minute's
 * slot), the 2 places that every degraded tenant of the install shares included. Bottleneck frees a dead client's
 * running jobs only so (its `clientTimeout` drops from its bookkeeping only a client with none running), and when
 * a client was last seen does not tell a dead process from a live one cut off from Redis, its calls still in
 * flight (README, Isolation).
 */
const BULK_PLACE_SLOTS = 10;
const CAP_EXPIRATION_SLOTS = { bulk: BULK_PLACE_SLOTS, degraded: BULK_PLACE_SLOTS } as const;

/** Refuses a cap (`name`) outside 1 to `maxConcurrent`, naming the rule. */
function validCap(name: string, slots: number, maxConcurrent: number): void {
  if (!Number.isInteger(slots) || slots < 1 || slots > maxConcurrent) {
    throw new RangeError(
      `${name} must be a whole number from 1 to maxConcurrent (${maxConcurrent}), got ${slots}`,
    );
  }
}

/** What the shared Bottleneck limiters of one process have in common. */
interface JoinedLimiters {
  connection: Bottleneck.IORedisConnection;
  client: Redis;
  keyPrefix: string;
  keyTtlMs: number;
  joinStoredSettings: boolean;
  logger: Logger;
}

/**
 * One Bottleneck limiter in Redis under `<prefix><name>`, shared by every process that uses the same id, on
 * the process's connection. Its `maxConcurrent` is written back once it is ready (the stored one wins over the
 * code's at creation), with a warning when that changes the stored one, unless `joinStoredSettings`.
 */
async function sharedBottleneck(
  joined: JoinedLimiters,
  name: string,
  maxConcurrent: number,
  what: string,
): Promise<Bottleneck> {
  const limiter = new Bottleneck({
    id: `${joined.keyPrefix}${name}`,
    connection: joined.connection,
    maxConcurrent,
    timeout: joined.keyTtlMs,
    clearDatastore: false,
  });
  limiter.on('error', (error: Error) =>
    joined.logger.error('defender limiter error', { error: error.message }),
  );
  await limiter.ready();
  if (joined.joinStoredSettings) return limiter;
  const stored = await joined.client.hget(`b_${joined.keyPrefix}${name}_settings`, 'maxConcurrent');
  if (stored !== null && stored !== String(maxConcurrent)) {
    joined.logger.warn(
      `defender limiter: the shared limit of ${what} changes from ${stored} to ${maxConcurrent}, for every process`,
      { previous: Number(stored), maxConcurrent },
    );
  }
  await limiter.updateSettings({ maxConcurrent });
  return limiter;
}

/** A limiter of this process only (the CLI without Redis, unit tests). */
export function createLocalLimiter(
  options: { maxConcurrent?: number; jobExpirationMs?: number } = {},
): CallLimiter {
  const limiter = new Bottleneck({ maxConcurrent: options.maxConcurrent ?? 10 });
  return wrap(limiter, options.jobExpirationMs ?? 60_000, async () => {
    await limiter.stop({ dropWaitingJobs: false });
  });
}

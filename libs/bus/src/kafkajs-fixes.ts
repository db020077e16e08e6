import { useFastCrc32c } from './crc32c';
import { useFastRecordBatches } from './kafkajs-records';

/** KafkaJS's per-connection request queue (the class its connections create one of). */
const KAFKAJS_REQUEST_QUEUE = 'kafkajs/src/network/requestQueue/index.js';

/** KafkaJS's delay before pending requests are looked at again when nothing else will wake them, ms. */
const CHECK_PENDING_REQUESTS_INTERVAL_MS = 10;

interface RequestQueueLike {
  pending: unknown[];
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  checkPendingRequests(): void;
}

/**
 * `RequestQueue.scheduleCheckPendingRequests` as KafkaJS 2.2.4 meant it (tulios/kafkajs#1556, #1667): a
 * later look at the queue only when requests wait in it, when the broker's throttle ends or after 10 ms.
 * KafkaJS 2.2.4 also schedules one when nothing waits, with a negative delay, so every connection runs a
 * 1 ms timer loop for as long as it is open: ~1,500 event-loop wake-ups a second in an idle service and
 * ~20 ms of CPU a second per process. A request pushed later schedules its own look, and a finished
 * request looks at the queue anyway, so nothing waits longer than before.
 */
function scheduleCheckPendingRequests(this: RequestQueueLike): void {
  if (this.throttleCheckTimeoutId || this.pending.length === 0) return;
  const untilUnthrottled = this.throttledUntil - Date.now();
  this.throttleCheckTimeoutId = setTimeout(
    () => {
      this.throttleCheckTimeoutId = null;
      this.checkPendingRequests();
    },
    untilUnthrottled > 0 ? untilUnthrottled : CHECK_PENDING_REQUESTS_INTERVAL_MS,
  );
}

/** KafkaJS's consumer group membership (the class a consumer creates anew on every start and restart). */
const KAFKAJS_CONSUMER_GROUP = 'kafkajs/src/consumer/consumerGroup.js';

export interface ConsumerGroupLike {
  memberId: string | null;
  /** The consumer's own event emitter: the same object through all of its restarts. */
  instrumentationEmitter: object;
  joinAndSync(): Promise<void>;
  leave(): Promise<void>;
}

/** Per consumer (its event emitter), the member id it last joined its group with and has not left. */
const memberIds = new WeakMap<object, string>();
/** Group memberships that have tried to join once: only a fresh one takes its consumer's last member id. */
const joinedBefore = new WeakSet<ConsumerGroupLike>();

/**
 * A consumer restarted after a crash (the broker away, say) joins its group with the member id it had, as the
 * Java consumer does. KafkaJS 2.2.4 builds a new membership on every start, with no member id: the broker then
 * holds the new member's join until the old member, which could not leave while the broker was away, either
 * rejoins (never) or its session times out, so the consumer stood idle for a whole session timeout (30 s) after
 * the broker came back. With its old id the join completes at once; an id the broker no longer knows is answered
 * UNKNOWN_MEMBER_ID, on which KafkaJS joins afresh. A member that left its group does not keep its id.
 */
export function keepMemberIdAcrossRestarts(ConsumerGroup: { prototype: ConsumerGroupLike }): void {
  const { joinAndSync, leave } = ConsumerGroup.prototype;
  ConsumerGroup.prototype.joinAndSync = async function (this: ConsumerGroupLike): Promise<void> {
    if (!joinedBefore.has(this)) {
      joinedBefore.add(this);
      this.memberId ??= memberIds.get(this.instrumentationEmitter) ?? null;
    }
    try {
      await joinAndSync.call(this);
    } finally {
      // Also when the join failed after JoinGroup answered a new id (SyncGroup refused): rejoining with the id
      // before it would leave the new one in the group until its rebalance timeout.
      if (this.memberId) memberIds.set(this.instrumentationEmitter, this.memberId);
    }
  };
  ConsumerGroup.prototype.leave = async function (this: ConsumerGroupLike): Promise<void> {
    await leave.call(this);
    memberIds.delete(this.instrumentationEmitter);
  };
}

/** The KafkaJS classes wrapped so far: applyKafkaJsFixes is idempotent, a wrapper must not wrap itself. */
const wrapped = new Set<string>();

/**
 * Applies `wrap` to the class KafkaJS's module `module` exports, once per process. False, leaving the class
 * as it is, when the module is not there or its prototype lacks one of `methods` (another KafkaJS layout).
 */
function wrapKafkaJsClass<P>(
  module: string,
  methods: readonly string[],
  wrap: (Class: { prototype: P }) => void,
): boolean {
  if (wrapped.has(module)) return true;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const Class = require(module) as { prototype: Record<string, unknown> };
    if (!methods.every((name) => typeof Class.prototype[name] === 'function')) return false;
    wrap(Class as unknown as { prototype: P });
    wrapped.add(module);
    return true;
  } catch {
    // Another KafkaJS layout: leave it as it is.
    return false;
  }
}

/** KafkaJS's connection to one broker (a broker holds two: one for fetches, one for the rest). */
const KAFKAJS_CONNECTION = 'kafkajs/src/network/connection.js';

export interface ConnectionLike {
  /** The connection's socket, from its last connect. */
  socket?: { destroyed: boolean; destroy(error?: Error): void } | null;
  send(request: unknown): Promise<unknown>;
  isConnected(): boolean;
}

/**
 * A request that times out closes its connection, as Java's client does (its NetworkClient disconnects from a
 * node on a request timeout), so that the next request to that broker connects afresh and, when the broker
 * cannot be reached, fails as a connection error, on which KafkaJS refreshes the cluster's metadata (a new
 * leader). KafkaJS 2.2.4 keeps the connection open (tulios/kafkajs#919): where a broker's host went away
 * without closing it (a host powered off, a firewall's or a NAT's state dropped: no FIN, no RST), every later
 * request on it timed out too, 30 s each, until TCP itself gave up (~15 minutes). The socket is destroyed
 * with an error, which KafkaJS handles as a connection error: the connection's other requests fail at once
 * (they would time out too) and the connection counts as disconnected. Only while it is still the
 * connection's open socket: one a disconnect has ended meanwhile (waiting for this request) is left to it.
 */
export function dropConnectionOnRequestTimeout(Connection: { prototype: ConnectionLike }): void {
  const { send } = Connection.prototype;
  Connection.prototype.send = async function (this: ConnectionLike, request: unknown): Promise<unknown> {
    const socket = this.socket;
    try {
      return await send.call(this, request);
    } catch (error) {
      if (
        (error as { name?: unknown } | null)?.name === 'KafkaJSRequestTimeoutError' &&
        socket &&
        socket === this.socket &&
        !socket.destroyed &&
        this.isConnected()
      ) {
        socket.destroy(new Error(`${(error as Error).message}: connection closed`));
      }
      throw error;
    }
  };
}

/**
 * Fixes for KafkaJS 2.2.4 (its last release), applied to the KafkaJS this package loads: the idle timer
 * loop of every connection (above), a consumer's member id kept across its restarts
 * (`keepMemberIdAcrossRestarts`), a connection closed when a request on it times out
 * (`dropConnectionOnRequestTimeout`), a faster record batch checksum (`useFastCrc32c`) and record batches
 * encoded in one pass, with large parts of a request referenced instead of copied (`useFastRecordBatches`);
 * both must run before a producer first sends, the checksum first. Idempotent. Answers what was applied.
 */
export function applyKafkaJsFixes(): {
  requestQueue: boolean;
  memberIds: boolean;
  connections: boolean;
  crc32c: boolean;
  recordBatches: boolean;
} {
  let requestQueue = false;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const RequestQueue = require(KAFKAJS_REQUEST_QUEUE) as {
      prototype: { scheduleCheckPendingRequests?: unknown };
    };
    if (typeof RequestQueue.prototype.scheduleCheckPendingRequests === 'function') {
      RequestQueue.prototype.scheduleCheckPendingRequests = scheduleCheckPendingRequests;
      requestQueue = true;
    }
  } catch {
    // Another KafkaJS layout: leave it as it is.
  }
  const memberIds = wrapKafkaJsClass(
    KAFKAJS_CONSUMER_GROUP,
    ['joinAndSync', 'leave'],
    keepMemberIdAcrossRestarts,
  );
  const connections = wrapKafkaJsClass(
    KAFKAJS_CONNECTION,
    ['send', 'isConnected'],
    dropConnectionOnRequestTimeout,
  );
  const crc32c = useFastCrc32c();
  return { requestQueue, memberIds, connections, crc32c, recordBatches: useFastRecordBatches() };
}

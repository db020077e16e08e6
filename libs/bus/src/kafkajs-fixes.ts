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

/**
 * Fixes for KafkaJS 2.2.4 (its last release), applied to the KafkaJS this package loads: the idle timer
 * loop of every connection (above), a faster record batch checksum (`useFastCrc32c`) and record batches
 * encoded in one pass, with large parts of a request referenced instead of copied (`useFastRecordBatches`);
 * both must run before a producer first sends, the checksum first. Idempotent. Answers what was applied.
 */
export function applyKafkaJsFixes(): { requestQueue: boolean; crc32c: boolean; recordBatches: boolean } {
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
  const crc32c = useFastCrc32c();
  return { requestQueue, crc32c, recordBatches: useFastRecordBatches() };
}

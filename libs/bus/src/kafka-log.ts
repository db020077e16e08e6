import type { LogEntry } from 'kafkajs';
import type { Logger } from '@urs/logging';

export interface KafkaLogForwarderOptions {
  /** Where KafkaJS's lines go, as warnings. */
  log: Logger;
  /** At most one line of the same message this often, ms. Default 60000. */
  intervalMs?: number;
  /** Messages remembered at most (the least recently logged is forgotten first). Default 1000. */
  maxMessages?: number;
  /** Injected by tests. Default Date.now. */
  now?: () => number;
}

/**
 * Forwards KafkaJS's log entries to `log`, each message at most once per intervalMs. A broker away for
 * minutes makes every client write a line per retry (connection errors, "Crash: …", "Restarting the
 * consumer in …ms") for as long as it lasts, while the runner already logs the outage once. The first line
 * of a message is forwarded at once; the same message within intervalMs of the last one forwarded is only
 * counted, and the first one after it carries that count as `repeated`. The same message: same namespace,
 * same text with its numbers left out (a retry's delay, a retry count, a port vary from line to line); the
 * entry's other fields (a stack, a retry count) are not compared. A count not followed by a line of its
 * message is never told: lines of an outage that ended stop, and a timer for them would need a close.
 */
export function createKafkaLogForwarder(options: KafkaLogForwarderOptions): (entry: LogEntry) => void {
  const { log } = options;
  const intervalMs = options.intervalMs ?? 60_000;
  const maxMessages = options.maxMessages ?? 1_000;
  const now = options.now ?? Date.now;
  /** By namespace and message: when it was last forwarded, and the lines not forwarded since. Oldest first. */
  const seen = new Map<string, { loggedAt: number; suppressed: number }>();
  return ({ namespace, log: entry }) => {
    const { message, ...fields } = entry;
    const text = String(message);
    const key = `${namespace}\u0000${text.replace(/\d+/g, '#')}`;
    const at = now();
    const last = seen.get(key);
    if (last && at - last.loggedAt < intervalMs) {
      last.suppressed++;
      return;
    }
    // Taken out and put back, so that the map stays in the order the messages were last forwarded.
    seen.delete(key);
    if (seen.size >= maxMessages) {
      const oldest = seen.keys().next();
      if (!oldest.done) seen.delete(oldest.value);
    }
    seen.set(key, { loggedAt: at, suppressed: 0 });
    const repeated = last && last.suppressed > 0 ? { repeated: last.suppressed } : {};
    log.warn(text, { namespace, ...fields, ...repeated });
  };
}

import type { KafkaMessage } from 'kafkajs';
import { silentLogger, type Logger } from '@urs/logging';
import { Registry } from '@urs/telemetry';
import type { MessageWork } from '../src/handle';
import { createHeldMessages, type HeldMessages } from '../src/held';

export interface WorkOf {
  topic: string;
  partition?: number;
  offset?: string;
  key?: string | null;
  value?: string | null;
  /** The runner's stop: aborting it makes the work's `shouldStop` true and cuts its pauses short. */
  stop?: AbortController;
}

/** One message's work as the runner hands it to the processor, with nothing to heartbeat or prepare. */
export function messageWork(of: WorkOf): MessageWork {
  const stop = of.stop ?? new AbortController();
  const message: KafkaMessage = {
    key: of.key == null ? null : Buffer.from(of.key),
    value: of.value == null ? null : Buffer.from(of.value),
    offset: of.offset ?? '0',
    timestamp: '0',
    attributes: 0,
    headers: {},
  };
  return {
    topic: of.topic,
    partition: of.partition ?? 0,
    message,
    heartbeat: async () => undefined,
    stopSignal: stop.signal,
    shouldStop: () => stop.signal.aborted,
    beforeRetry: async () => undefined,
  };
}

/**
 * Where a processor under test counts the messages it holds (gauge `held_messages` of `metrics`): warnings
 * at most once a minute, stalled after a minute, as no unit test waits that long.
 */
export function heldMessages(
  log: Logger = silentLogger,
  metrics: Registry = new Registry({ processMetrics: false }),
): HeldMessages {
  return createHeldMessages({
    log,
    gauge: metrics.gauge('held_messages', 'Messages held.'),
    labels: {},
    notReadyAfterMs: 60_000,
    logIntervalMs: 60_000,
  });
}

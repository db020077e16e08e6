import { Kafka, logLevel as KafkaLogLevel, type SASLOptions } from 'kafkajs';
import type { KafkaConfig } from '@urs/config';
import type { Logger } from '@urs/logging';
import { createKafkaLogForwarder } from './kafka-log';
import { applyKafkaJsFixes } from './kafkajs-fixes';

/**
 * A KafkaJS client whose own log lines go through our logger. KafkaJS logs routine rebalances at
 * ERROR, so only WARN and above are forwarded, as warnings, and each message at most once a minute with a
 * count of the lines left out (createKafkaLogForwarder): an outage makes every client log each retry. KafkaJS
 * 2.2.4's idle timer loop and slow checksum are fixed first (applyKafkaJsFixes).
 */
export interface CreateKafkaOptions {
  /**
   * How often a call, a connect included, is retried before it fails. Default 16. A caller that retries on
   * its own and must be able to stop (a wait for Kafka) asks for 0: KafkaJS's own retries cannot be stopped.
   */
  retries?: number;
}

export function createKafka(config: KafkaConfig, logger: Logger, options: CreateKafkaOptions = {}): Kafka {
  applyKafkaJsFixes();
  const forward = createKafkaLogForwarder({ log: logger.child({ component: 'kafkajs' }) });
  return new Kafka({
    clientId: config.clientId,
    brokers: config.brokers,
    ssl: config.ssl,
    ...(config.sasl ? { sasl: config.sasl as SASLOptions } : {}),
    logLevel: KafkaLogLevel.WARN,
    // One forwarder for every client of this Kafka, so that a message all of them log is counted once.
    logCreator: () => forward,
    // Retries at most 5 s apart (KafkaJS's default cap is 30 s): a client that lost its broker, a consumer
    // restarting among them, tries again within 5 s of the broker's return instead of sleeping up to 30 s of
    // backoff. 16 retries keep the time a call is retried before it fails about as long as the 8 uncapped ones
    // before (~64 s against ~68 s).
    retry: { initialRetryTime: 300, maxRetryTime: 5_000, retries: options.retries ?? DEFAULT_RETRIES },
  });
}

const DEFAULT_RETRIES = 16;

/**
 * How long the service's publisher tries a send again, ms (PublisherOptions.retryForMs, on a client of its own
 * with no retries: `createKafka(config, logger, { retries: 0 })`): a send fails after ~14 s, plus the attempt
 * under way then, instead of the ~64 s of a client's own 16 retries. Whoever sends retries on their own for as
 * long as the fault lasts (the consumer runner holds its message, the poller tries its cycle again, a REST
 * client is answered 503 and retries), and must know of the fault soon: the runner's held-message gauge,
 * warning and /readyz, and a REST answer within a proxy's usual 60 s. 14 s, not less: a partition's leader
 * moving after a broker died (KRaft fences a broker after its 9 s session) is ridden through, not a poller's
 * cycle abandoned for it. The tries are the publisher's, not KafkaJS's, so that a stop ends them at once:
 * KafkaJS's retries of a connect or a send (a reconnect and a metadata refresh under a send are the client's,
 * retried with the client's retries) cannot be stopped, and outlived the service's close by up to ~25 s.
 */
export const PUBLISHER_RETRY_MS = 14_000;

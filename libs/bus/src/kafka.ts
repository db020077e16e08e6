import { Kafka, logLevel as KafkaLogLevel, type LogEntry, type SASLOptions } from 'kafkajs';
import type { KafkaConfig } from '@urs/config';
import type { Logger } from '@urs/logging';
import { useFastCrc32c } from './crc32c';

/**
 * A KafkaJS client whose own log lines go through our logger. KafkaJS logs routine rebalances at
 * ERROR, so only WARN and above are forwarded, as warnings. Its record batches are checksummed with
 * our `crc32c` (see useFastCrc32c).
 */
export function createKafka(config: KafkaConfig, logger: Logger): Kafka {
  useFastCrc32c();
  const log = logger.child({ component: 'kafkajs' });
  return new Kafka({
    clientId: config.clientId,
    brokers: config.brokers,
    ssl: config.ssl,
    ...(config.sasl ? { sasl: config.sasl as SASLOptions } : {}),
    logLevel: KafkaLogLevel.WARN,
    logCreator:
      () =>
      ({ namespace, log: entry }: LogEntry) => {
        const { message, ...fields } = entry;
        log.warn(String(message), { namespace, ...fields });
      },
    retry: { initialRetryTime: 300, retries: 8 },
  });
}

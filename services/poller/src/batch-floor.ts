import { surelyTakenRecordBytes, topicMaxMessageBytes } from '@urs/bus';
import type { Logger } from '@urs/logging';
import type { Kafka } from 'kafkajs';

/**
 * The bytes of key and value a device batch may have for the batches' topic to surely take it, from the topic's
 * own limit (`max.message.bytes`, its own or the broker's default) less the room kept for Kafka's framing
 * (`surelyTakenRecordBytes`): a replica's floor for `BatchFit`, read once at its start. 0 when it cannot be read
 * (the principal lacking DescribeConfigs on the topic, the broker refusing or not answering): then only
 * batches no larger than one the topic took keep their cycle's totals, as before.
 */
export async function readBatchFloor(
  kafka: Kafka,
  topic: string,
  logger: Logger,
  options: { retries?: number } = {},
): Promise<number> {
  try {
    const maxMessageBytes = await topicMaxMessageBytes(kafka, topic, options);
    const floor = surelyTakenRecordBytes(maxMessageBytes);
    logger.info("device batches' size known taken from the topic's limit", {
      topic,
      maxMessageBytes,
      batchBytes: floor,
    });
    return floor;
  } catch (error) {
    logger.warn(
      "topic's max.message.bytes not read: a cycle's totals are kept before its last batch only once the topic took one as large",
      { topic, reason: error instanceof Error ? error.message : String(error) },
    );
    return 0;
  }
}

import { ConfigResourceTypes, type Kafka } from 'kafkajs';

const MAX_MESSAGE_BYTES = 'max.message.bytes';

/**
 * The `max.message.bytes` Kafka applies to `topic`: its own, else the broker's default (`message.max.bytes`),
 * as DescribeConfigs answers it (the principal needs DescribeConfigs on the topic). Rejects when it cannot be
 * read: the broker refusing or not answering (after `retries` of the admin client, 2 unless told), the topic
 * missing, or a value that is no positive integer.
 */
export async function topicMaxMessageBytes(
  kafka: Kafka,
  topic: string,
  options: { retries?: number } = {},
): Promise<number> {
  const admin = kafka.admin({ retry: { retries: options.retries ?? 2 } });
  try {
    await admin.connect();
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: [MAX_MESSAGE_BYTES] }],
    });
    const resource = described.resources.find((found) => found.resourceName === topic);
    if (resource === undefined) throw new Error(`no configs described for topic ${topic}`);
    if (resource.errorCode !== 0)
      throw new Error(
        `describing topic ${topic}'s configs failed (error ${resource.errorCode}): ${String(resource.errorMessage)}`,
      );
    const value = resource.configEntries.find((entry) => entry.configName === MAX_MESSAGE_BYTES)?.configValue;
    const bytes = Number(value);
    if (value === undefined || value === null || !Number.isSafeInteger(bytes) || bytes <= 0)
      throw new Error(`topic ${topic}'s ${MAX_MESSAGE_BYTES} is not a positive integer: ${String(value)}`);
    return bytes;
  } finally {
    await admin.disconnect();
  }
}

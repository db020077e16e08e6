import type { InboundMessage } from '@urs/bus';

/**
 * A message as the consumer runner hands it to a handler, for handler tests without Kafka: topic `t`,
 * partition 0, offset "0", no key, no headers, timestamp 0, unless `fields` says otherwise.
 */
export function inboundMessage<T>(
  value: T | null,
  fields: Partial<Omit<InboundMessage<T>, 'value'>> = {},
): InboundMessage<T> {
  return { topic: 't', partition: 0, offset: '0', key: null, value, headers: {}, timestamp: 0, ...fields };
}

import type { KafkaMessage } from 'kafkajs';
import { createSpentMessages } from '../src/spent';

const at = (offset: string, timestamp = '0'): KafkaMessage =>
  ({ offset, timestamp, key: null, value: null, attributes: 0, headers: {} }) as KafkaMessage;

describe('createSpentMessages', () => {
  it('should tell the failure of a remembered message until it is forgotten, by topic, partition, offset and timestamp', () => {
    const spent = createSpentMessages();
    const failure = new Error('gave up');
    spent.remember('t', 0, at('7'), failure);
    expect(spent.errorOf('t', 0, at('7'))).toEqual({ error: failure });
    expect(spent.errorOf('t', 1, at('7'))).toBeUndefined();
    expect(spent.errorOf('u', 0, at('7'))).toBeUndefined();
    expect(spent.errorOf('t', 0, at('7', '1'))).toBeUndefined();
    spent.forget('t', 0, at('7'));
    expect(spent.errorOf('t', 0, at('7'))).toBeUndefined();
  });

  it('should forget the oldest message first past its limit', () => {
    const spent = createSpentMessages(2);
    for (const offset of ['1', '2', '3']) spent.remember('t', 0, at(offset), new Error(offset));
    expect(['1', '2', '3'].map((offset) => spent.errorOf('t', 0, at(offset)) !== undefined)).toEqual([
      false,
      true,
      true,
    ]);
  });
});

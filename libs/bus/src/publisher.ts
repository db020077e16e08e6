import type { IHeaders, Kafka, Producer } from 'kafkajs';
import { validateMessage, type ContractId, type ContractTypes } from '@urs/contracts';
import { UrsError } from '@urs/resilience';
import { JavaCompatiblePartitioner } from './partitioner';

export interface OutboundMessage<T> {
  key: string;
  /** null produces a tombstone (compacted topics). */
  value: T | null;
  /**
   * `value` already serialised, when the producer built that text anyway (e.g. from parts it also
   * stores elsewhere): `JSON.stringify(value)`, or JSON bytes of the same value (`jsonBatchBytes`). The
   * value is still validated; the text is sent as it is instead of serialising the value again.
   */
  json?: string | Buffer;
  headers?: IHeaders;
}

export interface Publisher {
  /** Validates every value against its contract, then produces them all, acknowledged by all in-sync replicas. */
  send<K extends ContractId>(
    topic: string,
    contract: K,
    messages: OutboundMessage<ContractTypes[K]>[],
  ): Promise<void>;
  /** Produces already-serialised values (the dead-letter path, which must not fail validation again). */
  sendRaw(topic: string, messages: { key: string | null; value: string | null }[]): Promise<void>;
  close(): Promise<void>;
}

export class BusError extends UrsError {}

/** Validates a value against its contract and answers its JSON (the given text when there is one). */
function encode(contract: ContractId, value: unknown, json: string | Buffer | undefined): string | Buffer {
  const valid = validateMessage(contract, value);
  return json ?? JSON.stringify(valid);
}

export async function createPublisher(kafka: Kafka): Promise<Publisher> {
  const producer: Producer = kafka.producer({
    createPartitioner: JavaCompatiblePartitioner,
    allowAutoTopicCreation: false,
  });
  await producer.connect();
  let closing: Promise<void> | undefined;
  return {
    async send(topic, contract, messages) {
      if (closing) throw new BusError('BUS_CLOSED', 'the publisher is closed', { canRetry: false });
      if (messages.length === 0) return;
      const encoded = messages.map((message) => ({
        key: message.key,
        value: message.value === null ? null : encode(contract, message.value, message.json),
        ...(message.headers ? { headers: message.headers } : {}),
      }));
      await producer.send({ topic, acks: -1, messages: encoded });
    },
    async sendRaw(topic, messages) {
      if (messages.length === 0) return;
      await producer.send({ topic, acks: -1, messages });
    },
    close() {
      closing ??= producer.disconnect();
      return closing;
    },
  };
}

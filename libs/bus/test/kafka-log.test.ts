import type { LogEntry } from 'kafkajs';
import { createKafka } from '@urs/bus';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { createKafkaLogForwarder } from '../src/kafka-log';

/** A KafkaJS log entry as its logger hands it to a log creator. */
const entry = (namespace: string, message: string, fields: Record<string, unknown> = {}): LogEntry => ({
  namespace,
  level: 1,
  label: 'ERROR',
  log: { timestamp: new Date().toISOString(), message, ...fields },
});

describe('createKafka', () => {
  afterEach(() => jest.useRealTimers());

  it('should forward a KafkaJS message repeated through an outage once a minute, counting the rest', () => {
    jest.useFakeTimers({ now: 0 });
    const lines: LogLine[] = [];
    const kafka = createKafka(
      { brokers: ['127.0.0.1:9092'], clientId: 'test', ssl: false },
      capturingLogger(lines),
    );
    const connection = kafka.logger().namespace('Connection');
    for (let retry = 0; retry < 30; retry++) {
      connection.error('Connection error: connect ECONNREFUSED 127.0.0.1:9092', { retryCount: retry });
      jest.advanceTimersByTime(2_500);
    }
    expect(lines.map(({ message, repeated }) => ({ message, repeated }))).toEqual([
      { message: 'Connection error: connect ECONNREFUSED 127.0.0.1:9092', repeated: undefined },
      { message: 'Connection error: connect ECONNREFUSED 127.0.0.1:9092', repeated: 23 },
    ]);
    expect(lines[0]).toMatchObject({
      level: 'warn',
      component: 'kafkajs',
      namespace: 'Connection',
      retryCount: 0,
    });
  });
});

describe('createKafkaLogForwarder', () => {
  let at = 0;
  const now = (): number => at;
  beforeEach(() => (at = 0));

  it('should forward the first line of each message at once, told apart by namespace and text', () => {
    const lines: LogLine[] = [];
    const forward = createKafkaLogForwarder({ log: capturingLogger(lines), now });
    forward(entry('Consumer', 'Crash: KafkaJSConnectionError: Connection error'));
    forward(entry('Runner', 'Crash: KafkaJSConnectionError: Connection error'));
    forward(entry('Consumer', 'Crash: KafkaJSGroupCoordinatorNotFound: Failed to find group coordinator'));
    forward(entry('Consumer', 'Crash: KafkaJSConnectionError: Connection error'));
    expect(lines.map(({ namespace, message }) => `${String(namespace)} ${message}`)).toEqual([
      'Consumer Crash: KafkaJSConnectionError: Connection error',
      'Runner Crash: KafkaJSConnectionError: Connection error',
      'Consumer Crash: KafkaJSGroupCoordinatorNotFound: Failed to find group coordinator',
    ]);
  });

  it('should take a message whose numbers vary for the same, and its fields as they come', () => {
    const lines: LogLine[] = [];
    const forward = createKafkaLogForwarder({ log: capturingLogger(lines), now, intervalMs: 1_000 });
    forward(entry('Consumer', 'Restarting the consumer in 312ms', { retryTime: 312 }));
    at = 500;
    forward(entry('Consumer', 'Restarting the consumer in 4871ms', { retryTime: 4871 }));
    at = 999;
    forward(entry('Consumer', 'Restarting the consumer in 20ms', { retryTime: 20 }));
    at = 1_000;
    forward(entry('Consumer', 'Restarting the consumer in 1100ms', { retryTime: 1100 }));
    at = 5_000;
    forward(entry('Consumer', 'Restarting the consumer in 250ms', { retryTime: 250 }));
    expect(lines.map(({ message, retryTime, repeated }) => ({ message, retryTime, repeated }))).toEqual([
      { message: 'Restarting the consumer in 312ms', retryTime: 312, repeated: undefined },
      { message: 'Restarting the consumer in 1100ms', retryTime: 1100, repeated: 2 },
      { message: 'Restarting the consumer in 250ms', retryTime: 250, repeated: undefined },
    ]);
  });

  it('should forget the message least recently forwarded past maxMessages', () => {
    const lines: LogLine[] = [];
    const forward = createKafkaLogForwarder({ log: capturingLogger(lines), now, maxMessages: 2 });
    forward(entry('A', 'one'));
    forward(entry('A', 'two'));
    forward(entry('A', 'three'));
    forward(entry('A', 'two'));
    forward(entry('A', 'one'));
    expect(lines.map(({ message }) => message)).toEqual(['one', 'two', 'three', 'one']);
  });
});

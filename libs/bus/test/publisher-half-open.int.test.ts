import { connect, type Socket } from 'node:net';
import { Kafka, logLevel } from 'kafkajs';
import { applyKafkaJsFixes, createPublisher } from '@urs/bus';
import { createTestKafka, createUniqueTopics, deleteTopics, testInfra } from '@urs/testkit';

/**
 * A client whose connections to the broker can be cut the way a host that went away cuts them: no FIN, no
 * RST, requests written into the void and nothing answered (`cut()`, for the connections open then).
 * Connections made after it are whole.
 */
function cuttableKafka(requestTimeout: number): { kafka: Kafka; sockets: Socket[]; cut(): void } {
  const sockets: Socket[] = [];
  const kafka = new Kafka({
    clientId: 'half-open-test',
    brokers: testInfra().kafkaBrokers,
    logLevel: logLevel.NOTHING,
    requestTimeout,
    retry: { retries: 0 },
    socketFactory: ({ host, port, onConnect }) => {
      const socket = connect({ host, port }, onConnect);
      sockets.push(socket);
      return socket;
    },
  });
  return {
    kafka,
    sockets,
    cut() {
      for (const socket of sockets) {
        socket.pause();
        socket.write = () => true;
      }
    },
  };
}

describe('a connection that stops answering (half-open)', () => {
  let topic = '';
  beforeAll(async () => {
    applyKafkaJsFixes();
    topic = (await createUniqueTopics(createTestKafka(), [{ prefix: 'half-open' }]))[0]!;
  });
  afterAll(async () => {
    await deleteTopics(createTestKafka(), [topic]);
  });

  it("should send on a fresh connection once a request on the dead one timed out, not on the dead one until the send's deadline", async () => {
    const client = cuttableKafka(1_000);
    const publisher = await createPublisher(client.kafka, { retryForMs: 8_000 });
    try {
      await publisher.sendRaw(topic, [{ key: 'k', value: 'before' }]);
      const before = client.sockets.length;
      client.cut();
      // KafkaJS 2.2.4 wrote every attempt into the dead connection: each timed out, and the send failed.
      await publisher.sendRaw(topic, [{ key: 'k', value: 'after' }]);
      expect(client.sockets.length).toBeGreaterThan(before);
      const admin = createTestKafka().admin();
      await admin.connect();
      try {
        const [offsets] = await admin.fetchTopicOffsets(topic);
        expect(offsets!.high).toBe('2');
      } finally {
        await admin.disconnect();
      }
    } finally {
      await publisher.close();
      for (const socket of client.sockets) socket.destroy();
    }
  });
});

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import type { Kafka } from 'kafkajs';
import { deleteTopics, testInfra, waitFor } from '@urs/testkit';

/** What a service of its own reads: the test's Kafka and Redis, its own topics and keys. */
export function serviceEnv(prefix: string, logLevel = 'error'): Record<string, string> {
  return {
    KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
    REDIS_URL: testInfra().redisUrl,
    URS_TOPIC_PREFIX: prefix,
    URS_REDIS_PREFIX: `${prefix}:`,
    URS_METRICS_PORT: '0',
    URS_TOPIC_PARTITIONS: '1',
    URS_LOG_LEVEL: logLevel,
  };
}

/** Deletes the topics a service of its own created (their names start with its prefix). */
export async function deleteTopicsOf(kafka: Kafka, prefix: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(prefix));
  await admin.disconnect();
  await deleteTopics(kafka, topics);
}

/** A free TCP port of this host, for a Redis of the test's own. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

/** A throwaway redis-server on `port`, nothing saved: the shared Redis is never stopped by a test. */
export async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => void (output += chunk.toString()));
  await waitFor(() => output.includes('Ready to accept connections'), { timeoutMs: 10_000 });
  return child;
}

export async function stopRedis(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  await once(child, 'exit');
}

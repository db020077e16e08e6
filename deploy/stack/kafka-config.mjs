// @ts-check
// How a local Kafka broker is configured and started: one source for the local stack (kafka.mjs, `npm run
// stack:up`) and the tests' private brokers (test/support/private-kafka.ts, which reads this module through
// a Node of its own: the tests are CommonJS, this is an ES module). Only what the caller must choose
// (ports, files, partitions, heap) is a parameter, so a tuning made for one broker reaches the other.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Maven's dependency plugin, pinned: Maven 3.8's default dependency plugin is too old for copy-dependencies options. */
export const DEPENDENCY_PLUGIN = 'org.apache.maven.plugins:maven-dependency-plugin:3.8.1';

/**
 * The broker's Maven project and the directory `stack:up` copies its runtime jars into.
 * @param {string} root repository root
 * @param {string} stackDir the stack's directory (URS_STACK_DIR, default <root>/.stack)
 */
export const kafkaJars = (root, stackDir) => ({
  pom: path.join(root, 'deploy', 'kafka', 'pom.xml'),
  lib: path.join(stackDir, 'kafka', 'lib'),
});

/**
 * @typedef {{ port: number, controllerPort: number, dataDir: string, partitions: number }} ServerOptions
 * @typedef {{ heapOpts: string, log4jFile: string, classpath: string, configFile: string }} BrokerOptions
 * @typedef {{ classpath: string, log4jFile: string, clusterId: string, configFile: string }} FormatOptions
 */

/**
 * server.properties of a single broker in KRaft mode (combined broker and controller, static voter) on
 * 127.0.0.1.
 * @param {ServerOptions} options partitions: of a topic created without a count
 */
export function serverProperties({ port, controllerPort, dataDir, partitions }) {
  return [
    'process.roles=broker,controller',
    'node.id=1',
    // Static voters: the storage tool must then run WITHOUT --standalone (KAFKA-18987).
    `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names=CONTROLLER',
    'inter.broker.listener.name=PLAINTEXT',
    'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    `log.dirs=${dataDir}`,
    `num.partitions=${partitions}`,
    // Every topic is created explicitly with its partitions and config.
    'auto.create.topics.enable=false',
    'offsets.topic.replication.factor=1',
    // One offsets partition: the first group join does not wait for 50 partitions to load.
    'offsets.topic.num.partitions=1',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'transaction.state.log.num.partitions=1',
    'share.coordinator.state.topic.replication.factor=1',
    'share.coordinator.state.topic.min.isr=1',
    // No 3 s wait before the first rebalance of a new group.
    'group.initial.rebalance.delay.ms=0',
    '',
  ].join('\n');
}

/**
 * The client port a server.properties of `serverProperties` listens on (its PLAINTEXT listener), or undefined
 * when it names none.
 * @param {string} properties
 * @returns {number | undefined}
 */
export function listenerPort(properties) {
  const port = /^listeners=(?:.*,)?PLAINTEXT:\/\/[^,]*:(\d+)(?:,|$)/m.exec(properties)?.[1];
  return port === undefined ? undefined : Number(port);
}

/** log4j2.properties of the broker: warnings and worse on stdout. */
export const LOG4J_PROPERTIES = [
  'status = warn',
  'appender.console.type = Console',
  'appender.console.name = STDOUT',
  'appender.console.layout.type = PatternLayout',
  'appender.console.layout.pattern = [%d] %p %m (%c)%n',
  'rootLogger.level = warn',
  'rootLogger.appenderRef.stdout.ref = STDOUT',
  // Keeps the start and shutdown lines, which say when the broker is up or gone.
  'logger.raft.name = kafka.server.KafkaRaftServer',
  'logger.raft.level = info',
  '',
].join('\n');

/**
 * The `java` arguments that run the broker.
 * @param {BrokerOptions} options heapOpts: the JVM's heap flags, blank-separated
 * @returns {string[]}
 */
export function brokerArgs({ heapOpts, log4jFile, classpath, configFile }) {
  return [
    ...heapOpts.split(/\s+/).filter((s) => s !== ''),
    '-XX:+UseG1GC',
    '-XX:MaxGCPauseMillis=20',
    // Batch messages are 0.3–0.9 MB. With G1's default region for a 512 MB heap (1 MB), every object over
    // half a region is "humongous" (whole regions of its own, reclaimed apart), and so was the buffer of
    // every produce request of a batch: 8 MB regions make them ordinary objects. Broker CPU in the
    // bench's internal scenario on a fresh broker: 8.1–11.4 → 2.8–4.0 core-s (Kafka's own production
    // guidance sets 16 MB regions for its 6 GB heap).
    '-XX:G1HeapRegionSize=8m',
    // The broker's own Java work is light (most of its CPU is the kernel's network and file I/O), but C2, the
    // optimising JIT, kept compiling it for minutes on the cores the pipeline runs on: over one benchmark
    // invocation of three 50,000-device internal runs on a fresh broker, C2's threads used 4.6–4.8 core-s.
    // With C1 alone: 0.4 core-s, the request threads' CPU unchanged (5.9–6.2 core-s either way).
    '-XX:TieredStopAtLevel=1',
    '-XX:+ExitOnOutOfMemoryError',
    '-Djava.awt.headless=true',
    `-Dlog4j2.configurationFile=${log4jFile}`,
    '-cp',
    classpath,
    'kafka.Kafka',
    configFile,
  ];
}

/**
 * The `java` arguments that format a data directory (KRaft refuses to start on an unformatted one).
 * @param {FormatOptions} options
 * @returns {string[]}
 */
export function formatArgs({ classpath, log4jFile, clusterId, configFile }) {
  return [
    '-cp',
    classpath,
    `-Dlog4j2.configurationFile=${log4jFile}`,
    'kafka.tools.StorageTool',
    'format',
    '-t',
    clusterId,
    '-c',
    configFile,
    '-g',
  ];
}

/**
 * Same shape as `kafka-storage random-uuid`: 16 random bytes, base64url, 22 characters. Like Kafka's own
 * `Uuid.randomUuid`, it never starts with '-', which the storage tool's argument parser would read as an option.
 * @returns {string}
 */
export function randomClusterId() {
  for (;;) {
    const id = crypto.randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

/**
 * A classpath of the broker's jars without downloading any: the stack's when `stack:up` copied them, else
 * Maven's answer from its local cache (offline). For a broker started beside the stack (a test's own).
 * @param {string} root repository root
 * @param {string} stackDir the stack's directory
 * @returns {string}
 */
export function resolvedClasspath(root, stackDir) {
  const { pom, lib } = kafkaJars(root, stackDir);
  if (fs.existsSync(lib) && fs.readdirSync(lib).some((name) => name.startsWith('kafka_2.13'))) {
    return `${lib}/*`;
  }
  const out = path.join(os.tmpdir(), `urs-kafka-cp-${crypto.randomBytes(4).toString('hex')}.txt`);
  const args = [
    '-o',
    '-q',
    '-B',
    '-f',
    pom,
    `${DEPENDENCY_PLUGIN}:build-classpath`,
    `-Dmdep.outputFile=${out}`,
    '-DincludeScope=runtime',
  ];
  const run = spawnSync('mvn', args, { encoding: 'utf8' });
  if (run.status !== 0 || !fs.existsSync(out)) {
    throw new Error(
      `no Kafka jars: ${lib} is empty and mvn ${args.join(' ')} failed (run npm run stack:up once):\n${run.stdout ?? ''}${run.stderr ?? ''}`,
    );
  }
  const cp = fs.readFileSync(out, 'utf8').trim();
  fs.rmSync(out, { force: true });
  return cp;
}

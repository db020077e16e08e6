import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { freePort } from './ports';

/**
 * A Kafka broker of one test's own, which the test may stop and start again (an outage) without
 * touching the shared test broker: Apache Kafka's jars run in KRaft mode, like the local stack
 * (deploy/stack/kafka.mjs), on free ports, with a data directory under the system's temp directory.
 */
export interface PrivateKafka {
  readonly brokers: string[];
  /** Starts the broker (again, on the same ports and data) and waits until it answers. */
  start(): Promise<void>;
  /** Stops the broker the way an operator does (SIGTERM, a controlled shutdown) and waits for it to exit. */
  stop(): Promise<void>;
  /** Stops the broker and deletes its data. Idempotent. */
  close(): Promise<void>;
}

const ROOT = path.join(__dirname, '..', '..');

/** How long the broker may take to answer after its start, ms. */
const READY_TIMEOUT_MS = 90_000;

/** How long a controlled shutdown may take before the broker is killed, ms. */
const STOP_TIMEOUT_MS = 30_000;

/**
 * Fails, saying why, when no private broker can run here: the tests that stop a broker need Java 17+ on PATH,
 * as the local stack does (a machine whose shared broker is a container must still have it for these).
 */
function requireJava(): void {
  const java = spawnSync('java', ['-version'], { encoding: 'utf8' });
  if (java.error !== undefined)
    throw new Error(
      'java is not on PATH: a private Kafka broker (a test that stops its broker) needs Java 17+',
    );
}

/**
 * The broker's classpath: the local stack's jars when `npm run stack:up` resolved them (URS_STACK_DIR,
 * default .stack), else Maven's answer from its cache (deploy/kafka/pom.xml, offline).
 */
function classpath(): string {
  const stackDir = path.resolve(ROOT, process.env['URS_STACK_DIR'] ?? '.stack');
  const lib = path.join(stackDir, 'kafka', 'lib');
  if (fs.existsSync(lib) && fs.readdirSync(lib).some((name) => name.startsWith('kafka_2.13'))) {
    return `${lib}/*`;
  }
  const out = path.join(os.tmpdir(), `urs-kafka-cp-${randomBytes(4).toString('hex')}.txt`);
  const args = [
    '-o',
    '-q',
    '-B',
    '-f',
    path.join(ROOT, 'deploy', 'kafka', 'pom.xml'),
    'org.apache.maven.plugins:maven-dependency-plugin:3.8.1:build-classpath',
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

async function answers(brokers: string[]): Promise<boolean> {
  const kafka = new Kafka({
    clientId: 'private-kafka-probe',
    brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1_000,
    requestTimeout: 2_000,
    retry: { retries: 0 },
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    return (await admin.describeCluster()).brokers.length > 0;
  } catch {
    return false;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/** Formats a fresh data directory and starts a broker on it (see PrivateKafka). */
export async function startPrivateKafka(): Promise<PrivateKafka> {
  requireJava();
  const cp = classpath();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'urs-private-kafka-'));
  const [port, controllerPort] = [await freePort(), await freePort()];
  const brokers = [`127.0.0.1:${port}`];
  const config = path.join(dir, 'server.properties');
  const log4j = path.join(dir, 'log4j2.properties');
  const logFile = path.join(dir, 'kafka.out');
  fs.writeFileSync(
    config,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
      `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
      'controller.listener.names=CONTROLLER',
      'inter.broker.listener.name=PLAINTEXT',
      'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      `log.dirs=${path.join(dir, 'data')}`,
      'num.partitions=1',
      'auto.create.topics.enable=false',
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=1',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'transaction.state.log.num.partitions=1',
      'share.coordinator.state.topic.replication.factor=1',
      'share.coordinator.state.topic.min.isr=1',
      'group.initial.rebalance.delay.ms=0',
      '',
    ].join('\n'),
  );
  fs.writeFileSync(
    log4j,
    [
      'appender.console.type = Console',
      'appender.console.name = STDOUT',
      'appender.console.layout.type = PatternLayout',
      'appender.console.layout.pattern = [%d] %p %m (%c)%n',
      'rootLogger.level = warn',
      'rootLogger.appenderRef.stdout.ref = STDOUT',
      '',
    ].join('\n'),
  );
  const jvm = ['-cp', cp, `-Dlog4j2.configurationFile=${log4j}`];
  const clusterId = randomBytes(16).toString('base64url').replace(/^-/, 'A');
  const format = spawnSync(
    'java',
    [...jvm, 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', config, '-g'],
    { encoding: 'utf8' },
  );
  if (format.status !== 0) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`kafka storage format failed:\n${format.stdout}${format.stderr}`);
  }

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const killOnExit = (): void => void child?.kill('SIGKILL');
  process.once('exit', killOnExit);

  async function start(): Promise<void> {
    if (child) return;
    const out = fs.openSync(logFile, 'a');
    const started = spawn(
      'java',
      [
        '-Xms128m',
        '-Xmx512m',
        '-XX:+UseG1GC',
        '-XX:TieredStopAtLevel=1',
        '-XX:+ExitOnOutOfMemoryError',
        '-Djava.awt.headless=true',
        ...jvm,
        'kafka.Kafka',
        config,
      ],
      { cwd: dir, stdio: ['ignore', out, out] },
    );
    fs.closeSync(out);
    child = started;
    exited = new Promise((resolve) => started.once('exit', () => resolve()));
    void exited.then(() => {
      if (child === started) child = undefined;
    });
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!(await answers(brokers))) {
      if (child !== started || Date.now() > deadline) {
        const tail = fs.readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n');
        throw new Error(`private kafka on ${brokers.join(',')} did not start:\n${tail}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  async function stop(): Promise<void> {
    const running = child;
    if (!running) return;
    running.kill('SIGTERM');
    const timer = setTimeout(() => running.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }

  let closing: Promise<void> | undefined;
  await start();
  return {
    brokers,
    start,
    stop,
    close() {
      closing ??= stop().finally(() => {
        process.removeListener('exit', killOnExit);
        fs.rmSync(dir, { recursive: true, force: true });
      });
      return closing;
    },
  };
}

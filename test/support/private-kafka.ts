import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { freePort } from './ports';

/**
 * A Kafka broker of one test's own, which the test may stop and start again (an outage) without
 * touching the shared test broker: Apache Kafka's jars run in KRaft mode, configured as the local stack's
 * (deploy/stack/kafka-config.mjs), on free ports, with a data directory under the system's temp directory.
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
 * Partitions of a topic created without a count, and the JVM's heap: a test's broker is smaller than the
 * stack's.
 */
const PARTITIONS = 1;
const HEAP_OPTS = '-Xms128m -Xmx512m';

/** What deploy/stack/kafka-config.mjs makes of a private broker's ports and files. */
interface BrokerConfig {
  server: string;
  log4j: string;
  /** `java` arguments that format the data directory, then that run the broker. */
  format: string[];
  broker: string[];
}

interface BrokerFiles {
  port: number;
  controllerPort: number;
  dataDir: string;
  configFile: string;
  log4jFile: string;
}

/** Builds the configuration in deploy/stack/kafka-config.mjs's terms; evaluated there, see `brokerConfig`. */
const CONFIG_SCRIPT = `
  const [module, given] = process.argv.slice(1);
  const m = await import(module);
  const o = JSON.parse(given);
  const classpath = m.resolvedClasspath(o.root, o.stackDir);
  const files = { classpath, log4jFile: o.log4jFile, configFile: o.configFile };
  const config = {
    server: m.serverProperties(o),
    log4j: m.LOG4J_PROPERTIES,
    format: m.formatArgs({ ...files, clusterId: m.randomClusterId() }),
    broker: m.brokerArgs({ ...files, heapOpts: o.heapOpts }),
  };
  process.stdout.write(JSON.stringify(config));`;

/**
 * The broker's configuration, from the module the local stack configures its broker with, so that both run
 * alike; its classpath is the local stack's jars when `npm run stack:up` resolved them (URS_STACK_DIR,
 * default .stack), else Maven's answer from its cache (deploy/kafka/pom.xml, offline). Read in a Node of its
 * own: the stack's scripts are ES modules, the tests are not.
 */
function brokerConfig(files: BrokerFiles): BrokerConfig {
  const module = path.join(ROOT, 'deploy', 'stack', 'kafka-config.mjs');
  const options = {
    ...files,
    partitions: PARTITIONS,
    heapOpts: HEAP_OPTS,
    root: ROOT,
    stackDir: path.resolve(ROOT, process.env['URS_STACK_DIR'] ?? '.stack'),
  };
  const run = spawnSync(
    process.execPath,
    ['--input-type=module', '-e', CONFIG_SCRIPT, module, JSON.stringify(options)],
    { encoding: 'utf8' },
  );
  if (run.status !== 0) throw new Error(`no private Kafka configuration:\n${run.stderr}`);
  return JSON.parse(run.stdout) as BrokerConfig;
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
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'urs-private-kafka-'));
  const [port, controllerPort] = [await freePort(), await freePort()];
  const brokers = [`127.0.0.1:${port}`];
  const configFile = path.join(dir, 'server.properties');
  const log4jFile = path.join(dir, 'log4j2.properties');
  const logFile = path.join(dir, 'kafka.out');
  let config: BrokerConfig;
  try {
    config = brokerConfig({ port, controllerPort, dataDir: path.join(dir, 'data'), configFile, log4jFile });
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  fs.writeFileSync(configFile, config.server);
  fs.writeFileSync(log4jFile, config.log4j);
  const format = spawnSync('java', config.format, { encoding: 'utf8' });
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
    const started = spawn('java', config.broker, { cwd: dir, stdio: ['ignore', out, out] });
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

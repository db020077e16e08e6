// @ts-check
// The Kafka half of the local stack: one Apache Kafka broker in KRaft mode (combined broker and
// controller, static voter), run from the jars Maven resolves from Maven Central into <stack>/kafka/lib.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import kafkajs from 'kafkajs';
import {
  DEPENDENCY_PLUGIN,
  LOG4J_PROPERTIES,
  brokerArgs,
  formatArgs,
  kafkaJars,
  listenerPort,
  randomClusterId,
  serverProperties,
} from './kafka-config.mjs';
import { ownedPid, portAnswers, readOr, sleep, startDetached, stopProcess, tail, onPath } from './proc.mjs';

const { Kafka, logLevel } = kafkajs;

/**
 * @typedef {import('./stack.mjs').StackConfig} StackConfig
 * @typedef {{ state: 'running' | 'external' | 'down', brokers: string[], pid?: number, rssMb?: number,
 *   ready: boolean, detail?: string }} KafkaStatus
 */

/** @param {StackConfig} cfg */
function paths(cfg) {
  const dir = path.join(cfg.stackDir, 'kafka');
  const { pom, lib } = kafkaJars(cfg.root, cfg.stackDir);
  return {
    dir,
    lib,
    stamp: path.join(lib, '.pom.sha256'),
    data: path.join(dir, 'data'),
    config: path.join(dir, 'server.properties'),
    log4j: path.join(dir, 'log4j2.properties'),
    clusterId: path.join(dir, 'cluster-id'),
    pidFile: path.join(dir, 'kafka.pid'),
    logFile: path.join(dir, 'logs', 'kafka.out'),
    pom,
  };
}

/**
 * The marker that identifies our broker's command line: the main class and this checkout's config
 * file. Two checkouts therefore never claim (or stop) each other's broker.
 * @param {StackConfig} cfg
 */
const marker = (cfg) => `kafka.Kafka ${paths(cfg).config}`;

/** @param {StackConfig} cfg */
export const brokersOf = (cfg) => [`127.0.0.1:${cfg.kafkaPort}`];

/**
 * Whether a KafkaJS admin client can describe the cluster and list topics at `brokers`.
 * @param {string[]} brokers
 * @param {number} timeoutMs per-request timeout in milliseconds
 * @returns {Promise<boolean>}
 */
export async function adminAnswers(brokers, timeoutMs) {
  const kafka = new Kafka({
    clientId: 'urs-stack',
    brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: Math.min(timeoutMs, 3000),
    requestTimeout: timeoutMs,
    retry: { retries: 0 },
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    await admin.listTopics();
    return cluster.brokers.length > 0;
  } catch {
    return false;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/** Fails with what to install when no Java 17+ is on PATH (the Kafka 4 broker needs 17). */
function checkJava() {
  const out = spawnSync('java', ['-version'], { encoding: 'utf8' });
  if (out.error !== undefined) {
    throw new Error(
      'java not found: install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless) or use Docker (docker compose up)',
    );
  }
  const match = /version "(\d+)/.exec(`${out.stderr}${out.stdout}`);
  const major = match?.[1] === undefined ? 0 : Number(match[1]);
  if (major < 17) throw new Error(`java ${major} found; the Kafka 4 broker needs Java 17+`);
  if (!onPath('mvn')) {
    throw new Error(
      'mvn not found: install Maven 3.8+ (e.g. apt-get install maven) to resolve the Kafka jars from Maven Central',
    );
  }
}

/**
 * Copies the broker's runtime classpath from Maven (its cache, else Maven Central) into lib/,
 * unless lib/ already holds the jars of the current pom.
 * @param {StackConfig} cfg
 */
function resolveJars(cfg) {
  const p = paths(cfg);
  const pomHash = crypto.createHash('sha256').update(fs.readFileSync(p.pom)).digest('hex');
  if (readOr(p.stamp, '').trim() === pomHash) return;
  fs.rmSync(p.lib, { recursive: true, force: true });
  log('kafka: resolving the broker jars with Maven (first run downloads ~45 MB from Maven Central)');
  const args = [
    '-q',
    '-B',
    '-f',
    p.pom,
    `${DEPENDENCY_PLUGIN}:copy-dependencies`,
    `-DoutputDirectory=${p.lib}`,
    '-DincludeScope=runtime',
  ];
  const out = spawnSync('mvn', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (out.status !== 0) {
    throw new Error(`mvn ${args.join(' ')} failed (exit ${out.status}):\n${out.stdout}${out.stderr}`);
  }
  fs.writeFileSync(p.stamp, `${pomHash}\n`);
}

/** @param {StackConfig} cfg */
function writeConfig(cfg) {
  const p = paths(cfg);
  const server = serverProperties({
    port: cfg.kafkaPort,
    controllerPort: cfg.controllerPort,
    dataDir: p.data,
    partitions: 3,
  });
  fs.mkdirSync(p.dir, { recursive: true });
  fs.writeFileSync(p.config, server);
  fs.writeFileSync(p.log4j, LOG4J_PROPERTIES);
}

/**
 * Formats the data directory once (KRaft refuses to start on an unformatted one).
 * @param {StackConfig} cfg
 */
function formatStorage(cfg) {
  const p = paths(cfg);
  if (fs.existsSync(path.join(p.data, 'meta.properties'))) return;
  let clusterId = readOr(p.clusterId, '').trim();
  if (clusterId === '' || clusterId.startsWith('-')) {
    clusterId = randomClusterId();
    fs.writeFileSync(p.clusterId, `${clusterId}\n`);
  }
  const args = formatArgs({ classpath: `${p.lib}/*`, log4jFile: p.log4j, clusterId, configFile: p.config });
  const out = spawnSync('java', args, { encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`kafka storage format failed:\n${out.stdout}${out.stderr}`);
}

/**
 * Polls the admin API until the broker answers, failing early if the process dies.
 * @param {StackConfig} cfg
 * @param {number | undefined} pid our broker's pid, or undefined for a broker we did not start
 */
async function waitReady(cfg, pid) {
  const deadline = Date.now() + cfg.readyTimeoutMs;
  while (Date.now() < deadline) {
    if (pid !== undefined && ownedPid(paths(cfg).pidFile, marker(cfg)) === undefined) {
      throw new Error(
        `kafka broker exited during start-up; last log lines:\n${tail(paths(cfg).logFile, 30)}`,
      );
    }
    if (await adminAnswers(brokersOf(cfg), 2000)) return;
    await sleep(250);
  }
  throw new Error(
    `kafka broker at ${brokersOf(cfg).join(',')} not ready after ${cfg.readyTimeoutMs} ms; log: ${paths(cfg).logFile}`,
  );
}

/**
 * The port this stack directory's broker was configured for, when it is not the port asked for (`cfg.kafkaPort`),
 * and the broker so described; undefined when they match.
 * @param {StackConfig} cfg
 * @returns {{ port: number | undefined, broker: (pid: number) => string } | undefined}
 */
function otherPortOf(cfg) {
  const port = listenerPort(readOr(paths(cfg).config, ''));
  if (port === cfg.kafkaPort) return undefined;
  return {
    port,
    broker: (pid) =>
      `the broker of ${cfg.stackDir} (pid ${pid}) listens on 127.0.0.1:${port ?? '(unknown)'}, ` +
      `not 127.0.0.1:${cfg.kafkaPort}`,
  };
}

/**
 * Starts the broker unless ours is already running or another broker already answers on the port.
 * @param {StackConfig} cfg
 * @returns {Promise<KafkaStatus>}
 */
export async function kafkaUp(cfg) {
  const p = paths(cfg);
  const brokers = brokersOf(cfg);
  const running = ownedPid(p.pidFile, marker(cfg));
  if (running !== undefined) {
    // This stack directory's broker, started for other ports: not the one wanted here. Adopted, it was waited
    // for on a port it never answers, and the stop after the failure took a running broker down.
    const otherPort = otherPortOf(cfg);
    if (otherPort !== undefined) {
      throw new Error(`${otherPort.broker(running)}: give a stack on other ports a URS_STACK_DIR of its own`);
    }
    await waitReady(cfg, running);
    return { state: 'running', brokers, pid: running, ready: true };
  }
  if (await portAnswers('127.0.0.1', cfg.kafkaPort)) {
    // Another checkout's stack (or any broker) owns the port: reuse it, never stop it.
    await waitReady(cfg, undefined).catch(() => {
      throw new Error(
        `127.0.0.1:${cfg.kafkaPort} is in use by something that is not a Kafka broker; set URS_STACK_KAFKA_PORT`,
      );
    });
    return {
      state: 'external',
      brokers,
      ready: true,
      detail: 'not started by this stack; stack:down leaves it running',
    };
  }
  if (await portAnswers('127.0.0.1', cfg.controllerPort)) {
    throw new Error(
      `controller port 127.0.0.1:${cfg.controllerPort} is in use; set URS_STACK_KAFKA_CONTROLLER_PORT`,
    );
  }
  checkJava();
  resolveJars(cfg);
  writeConfig(cfg);
  formatStorage(cfg);
  const args = brokerArgs({
    heapOpts: cfg.kafkaHeapOpts,
    log4jFile: p.log4j,
    classpath: `${p.lib}/*`,
    configFile: p.config,
  });
  const pid = startDetached('java', args, { logFile: p.logFile, pidFile: p.pidFile, cwd: p.dir });
  try {
    await waitReady(cfg, pid);
  } catch (err) {
    await stopProcess(pid, 5000);
    fs.rmSync(p.pidFile, { force: true });
    throw err;
  }
  return { state: 'running', brokers, pid, ready: true, detail: 'started' };
}

/**
 * Stops the broker this checkout's stack started for this port; leaves any other broker alone. The stack
 * directory's broker started for another port is someone else's stack (a developer's, run with other ports
 * than this one): refused, it keeps running and its pid file.
 * @param {StackConfig} cfg
 * @returns {Promise<string>} what happened
 */
export async function kafkaDown(cfg) {
  const p = paths(cfg);
  const pid = ownedPid(p.pidFile, marker(cfg));
  const otherPort = pid === undefined ? undefined : otherPortOf(cfg);
  if (pid !== undefined && otherPort !== undefined) {
    throw new Error(
      `${otherPort.broker(pid)}: left running; stop it with URS_STACK_KAFKA_PORT=${otherPort.port ?? '(its port)'} ` +
        'and this URS_STACK_DIR',
    );
  }
  fs.rmSync(p.pidFile, { force: true });
  if (pid === undefined) return 'not running (nothing started by stack:up)';
  // A controlled shutdown takes a few seconds; after 30 s the broker is killed (recovery on next start).
  await stopProcess(pid, 30_000);
  return `stopped pid ${pid}`;
}

/**
 * @param {StackConfig} cfg
 * @returns {Promise<KafkaStatus>}
 */
export async function kafkaStatus(cfg) {
  const brokers = brokersOf(cfg);
  const pid = ownedPid(paths(cfg).pidFile, marker(cfg));
  const ready = await adminAnswers(brokers, 2000);
  if (pid !== undefined) return { state: 'running', brokers, pid, rssMb: rssMb(pid), ready };
  return ready
    ? { state: 'external', brokers, ready, detail: 'not started by this stack' }
    : { state: 'down', brokers, ready };
}

/**
 * Resident memory of a process in MB (Linux /proc, else ps), for the status line.
 * @param {number} pid
 */
function rssMb(pid) {
  const status = readOr(`/proc/${pid}/status`, '');
  const kb =
    /VmRSS:\s+(\d+)/.exec(status)?.[1] ??
    spawnSync('ps', ['-o', 'rss=', '-p', String(pid)], { encoding: 'utf8' }).stdout.trim();
  const n = Number(kb);
  return Number.isFinite(n) && n > 0 ? Math.round(n / 1024) : undefined;
}

/** @param {StackConfig} cfg */
export function kafkaWipe(cfg) {
  fs.rmSync(paths(cfg).data, { recursive: true, force: true });
  fs.rmSync(paths(cfg).clusterId, { force: true });
}

/** @param {string} line */
function log(line) {
  process.stderr.write(`${line}\n`);
}

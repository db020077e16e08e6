#!/usr/bin/env node
// `npm run demo`: the whole product on this machine, against the Microsoft simulator.
//
// Brings the local stack up (Kafka + Redis), starts the simulator with a few tenants, the five services
// as separate processes (from their builds; `npm run build` first when one is missing), registers the
// tenants through the registrar's REST API, shows progress while cycles run, and prints the devices per
// band per tenant from `vms.risk-summary` after each round of cycles. Ctrl-C stops everything it
// started (a stack that was already running is left running) and deletes the demo's topics and keys.
//
// Options (environment):
//   URS_DEMO_INTERVAL_UNIT_MS  ms in one "minute" of the 10-minute poll interval, default 6000 (1-minute cycles: the small fleets fetch one device at a time within the 50-calls-a-minute quota)
//   URS_DEMO_CYCLES            stop by itself after this many rounds of cycles, default 0 (run until Ctrl-C)
//   URS_DEMO_LOG_DIR           where each process's log goes, default .demo/logs
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(import.meta.url);
const { Kafka, logLevel } = require('kafkajs');
const Redis = require('ioredis');

const SERVICES = ['registrar', 'poller', 'vuln-fetcher', 'scorer', 'publisher'];
const BANDS = ['Trustworthy', 'Low Risk', 'Moderate Risk', 'Suspicious', 'High Risk'];
const env = process.env;
const intervalUnitMs = Number(env.URS_DEMO_INTERVAL_UNIT_MS ?? 6000);
const stopAfterRounds = Number(env.URS_DEMO_CYCLES ?? 0);
const logDir = path.resolve(ROOT, env.URS_DEMO_LOG_DIR ?? '.demo/logs');
const runId = `demo-${Date.now().toString(36)}`;
const topicPrefix = `${runId}.`;
const redisPrefix = `${runId}:`;
const kafkaBrokers = env.KAFKA_BROKERS ?? '127.0.0.1:9092';
const redisUrl = env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const apiToken = randomBytes(16).toString('hex');

// Small fleets answer within seconds one device at a time (the per-device quota is 50 calls a minute);
// the large one is past what per-device calls serve in a 10-minute interval, so it uses the bulk export.
const TENANTS = [
  { tenantId: 'contoso', size: 20 },
  { tenantId: 'fabrikam', size: 30 },
  { tenantId: 'northwind', size: 1500 },
].map((tenant) => ({
  ...tenant,
  azureTenantId: randomUUID(),
  clientId: randomUUID(),
  secret: randomBytes(18).toString('base64url'),
}));

/** Every process this script started, to stop on exit. */
const children = [];
let stackStartedHere = false;
let stopping = false;

const started = Date.now();
const say = (line) =>
  process.stdout.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${line}\n`);

function run(command, args) {
  const result = spawnSync(command, args, { cwd: ROOT, stdio: 'inherit' });
  if (result.status !== 0)
    throw new Error(`${command} ${args.join(' ')} failed (${result.status ?? result.signal})`);
}

function ensureBuilt() {
  const entries = [...SERVICES.map((name) => `services/${name}/dist/main.js`), 'test/simulator/dist/main.js'];
  if (entries.every((entry) => existsSync(path.join(ROOT, entry)))) return;
  say('building (npm run build)…');
  run('npm', ['run', 'build']);
}

function ensureStack() {
  const status = spawnSync(process.execPath, ['deploy/stack/stack.mjs', 'status'], {
    cwd: ROOT,
    stdio: 'ignore',
  });
  if (status.status === 0) {
    say('stack already running: using it (and leaving it running)');
    return;
  }
  say('starting the local stack (npm run stack:up)…');
  run('npm', ['run', 'stack:up']);
  stackStartedHere = true;
}

/** Starts a process, writes its output to a log file, and resolves on the first line `ready(line)` accepts. */
/** Rejects when a process exits while the demo runs (not while it stops): the demo then fails, not hangs. */
let died = () => undefined;
const death = new Promise((_resolve, reject) => {
  died = reject;
});
death.catch(() => undefined);

function startProcess(name, args, processEnv, ready) {
  const log = createWriteStream(path.join(logDir, `${name}.log`), { flags: 'a' });
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: processEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push({ name, child });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${name} did not start within 60 s (see ${log.path})`)),
      60_000,
    );
    child.once('exit', (code, signal) => {
      const at = children.findIndex((entry) => entry.child === child);
      if (at >= 0) children.splice(at, 1);
      if (!stopping) {
        clearTimeout(timer);
        const error = new Error(`${name} exited (${code ?? signal}); see ${log.path}`);
        reject(error);
        died(error);
      }
    });
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on('line', (line) => {
        log.write(`${line}\n`);
        let parsed;
        try {
          parsed = JSON.parse(line);
        } catch {
          return;
        }
        if (parsed.message === 'start failed') {
          // The service exits with status 1 right after this line; the line carries the reason.
          clearTimeout(timer);
          reject(new Error(`${name} failed to start: ${parsed.error?.message ?? 'see its log'}`));
          return;
        }
        if (parsed.level === 'error')
          say(`${name}: ${parsed.message}${parsed.reason ? ` (${parsed.reason})` : ''}`);
        const value = ready(parsed);
        if (value !== undefined) {
          clearTimeout(timer);
          resolve(value);
        }
      });
    }
  });
}

async function startSimulator() {
  const args = ['test/simulator/dist/main.js', '--port', '0', '--ca-dir', path.join(ROOT, '.demo', 'sim')];
  for (const t of TENANTS) args.push('--tenant', `${t.azureTenantId}:${t.clientId}:${t.secret}:${t.size}`);
  return startProcess('simulator', args, { PATH: env.PATH }, (line) => (line.baseUrl ? line : undefined));
}

async function startServices(sim) {
  const common = {
    PATH: env.PATH,
    NODE_EXTRA_CA_CERTS: sim.caFile,
    KAFKA_BROKERS: kafkaBrokers,
    REDIS_URL: redisUrl,
    URS_TOPIC_PREFIX: topicPrefix,
    URS_REDIS_PREFIX: redisPrefix,
    URS_TOPIC_PARTITIONS: '3',
    URS_SECRET_KEY: randomBytes(32).toString('base64'),
    URS_DEFENDER_AUTHORITY_HOST: sim.baseUrl,
    URS_DEFENDER_API_BASE: sim.baseUrl,
    URS_METRICS_PORT: '0',
    URS_HTTP_PORT: '0',
    URS_API_TOKENS: apiToken,
    URS_POLL_INTERVAL_UNIT_MS: String(intervalUnitMs),
    URS_POLL_BATCH_SIZE: '250',
  };
  // The Node flags each stage is deployed with (the same as its docker-compose command).
  const NODE_FLAGS = JSON.parse(readFileSync(path.join(ROOT, 'deploy/node-flags.json'), 'utf8'));
  const isStarted = (line) => (line.message === 'started' ? line : undefined);
  // The registrar first: it creates the topics, and its REST port is needed to register the tenants.
  let httpPort;
  const registrarArgs = [...(NODE_FLAGS.registrar ?? []), 'services/registrar/dist/main.js'];
  await startProcess('registrar', registrarArgs, common, (line) => {
    if (line.message === 'REST listening') httpPort = line.httpPort;
    return isStarted(line);
  });
  await Promise.all(
    SERVICES.slice(1).map((name) =>
      startProcess(name, [...(NODE_FLAGS[name] ?? []), `services/${name}/dist/main.js`], common, isStarted),
    ),
  );
  return `http://127.0.0.1:${httpPort}`;
}

async function register(apiUrl) {
  for (const t of TENANTS) {
    const response = await fetch(`${apiUrl}/v1/tenants/${t.tenantId}/defender`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        enabled: true,
        azureTenantId: t.azureTenantId,
        clientId: t.clientId,
        clientSecret: t.secret,
        pollIntervalMinutes: 10,
      }),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(`registering ${t.tenantId} failed: ${JSON.stringify(answer)}`);
    say(`registered ${t.tenantId} (${t.size} devices, every 10 "minutes" of ${intervalUnitMs} ms)`);
  }
}

function table(latest) {
  const columns = [
    'tenant',
    'status',
    'devices',
    ...BANDS,
    'incomplete',
    'changed',
    'collect s',
    'publish ms',
  ];
  const rows = TENANTS.map((t) => {
    const s = latest.get(t.tenantId);
    if (!s) return [t.tenantId, 'waiting', '', ...BANDS.map(() => ''), '', '', '', ''];
    return [
      t.tenantId,
      s.status,
      String(s.devices.total),
      ...BANDS.map((band) => String(s.bands[band])),
      String(s.devices.incomplete),
      String(s.published.changed),
      (s.timings.collectMs / 1000).toFixed(1),
      String(s.timings.scoreToPublishMs),
    ];
  });
  const widths = columns.map((c, i) => Math.max(c.length, ...rows.map((r) => r[i].length)));
  const line = (cells) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ');
  return [line(columns), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

async function watch(kafka) {
  const consumer = kafka.consumer({ groupId: `${runId}-watch`, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topic: `${topicPrefix}urs.device-scores`, fromBeginning: true });
  await consumer.subscribe({ topic: `${topicPrefix}vms.risk-summary`, fromBeginning: true });
  const latest = new Map();
  const scored = new Map();
  let rounds = 0;
  let roundTenants = new Set();
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  await consumer.run({
    eachMessage: async ({ topic, message }) => {
      const value = JSON.parse(message.value.toString('utf8'));
      if (topic.endsWith('urs.device-scores')) {
        const key = `${value.tenantId}/${value.cycleId}`;
        const count = (scored.get(key) ?? 0) + value.devices.length;
        scored.set(key, count);
        if (value.lastBatch || value.batchIndex % 2 === 1) {
          say(
            `${value.tenantId}: cycle ${value.cycleId} scored ${count}${value.totalDevices !== undefined ? `/${value.totalDevices}` : ''} devices`,
          );
        }
        return;
      }
      latest.set(value.tenantId, value);
      say(
        `${value.tenantId}: cycle ${value.cycleId} published (${value.status}): ${value.devices.scored}/${value.devices.total} ` +
          `devices, ${value.published.changed} changed, ${value.timings.scoreToPublishMs} ms after the last score`,
      );
      roundTenants.add(value.tenantId);
      if (TENANTS.every((t) => roundTenants.has(t.tenantId))) {
        rounds++;
        roundTenants = new Set();
        process.stdout.write(
          `\nDevices per band per tenant (vms.risk-summary, round ${rounds}):\n${table(latest)}\n\n`,
        );
        if (stopAfterRounds > 0 && rounds >= stopAfterRounds) finish();
      }
    },
  });
  return { consumer, finished };
}

async function cleanUp(kafka) {
  try {
    const admin = kafka.admin();
    await admin.connect();
    const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(topicPrefix));
    if (topics.length > 0) await admin.deleteTopics({ topics });
    await admin.disconnect();
  } catch (error) {
    say(`could not delete the demo topics: ${error.message}`);
  }
  const redis = new Redis(redisUrl, { disableClientInfo: true, maxRetriesPerRequest: 1, lazyConnect: true });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `*${redisPrefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== '0');
  } catch (error) {
    say(`could not delete the demo keys: ${error.message}`);
  } finally {
    redis.disconnect();
  }
}

async function stopAll(kafka, consumer) {
  if (stopping) return;
  stopping = true;
  say('stopping…');
  await consumer?.disconnect().catch(() => undefined);
  // Services first (they drain and commit), the simulator last.
  const order = [...children].reverse().sort((a, b) => (a.name === 'simulator') - (b.name === 'simulator'));
  for (const { child } of order) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  }
  await cleanUp(kafka);
  if (stackStartedHere) run('npm', ['run', 'stack:down']);
  say(`stopped; logs in ${logDir}`);
}

async function main() {
  mkdirSync(logDir, { recursive: true });
  ensureBuilt();
  ensureStack();
  const kafka = new Kafka({ clientId: runId, brokers: kafkaBrokers.split(','), logLevel: logLevel.NOTHING });
  let consumer;
  const onSignal = () => {
    stopAll(kafka, consumer).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const sim = await startSimulator();
    say(`simulator at ${sim.baseUrl}`);
    const apiUrl = await startServices(sim);
    say(`services started; registrar REST at ${apiUrl} (token in this process only); logs in ${logDir}`);
    const watching = await watch(kafka);
    consumer = watching.consumer;
    await register(apiUrl);
    say('polling… (Ctrl-C stops everything)');
    await Promise.race([watching.finished, death]);
    await stopAll(kafka, consumer);
  } catch (error) {
    say(`demo failed: ${error.message}`);
    await stopAll(kafka, consumer);
    process.exitCode = 1;
  }
}

void main();

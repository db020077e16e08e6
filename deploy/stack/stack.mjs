#!/usr/bin/env node
// @ts-check
// The local stack: `node deploy/stack/stack.mjs up|down|status [--json] [--wipe]`
// (npm run stack:up / stack:down / stack:status). Runs without a TypeScript build.
//
//   up      start (or reuse) one Kafka broker and a Redis; returns when both answer
//   down    stop only what `up` started in this checkout; --wipe also deletes the broker's data
//   status  print what runs; exit 0 only when Kafka and Redis both answer
//   --json  print the result as one JSON object on stdout (messages go to stderr)
//   --only=kafka|--only=redis  `up` handles just that half (the other is provided elsewhere)
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { kafkaDown, kafkaStatus, kafkaUp, kafkaWipe } from './kafka.mjs';
import { withLock } from './proc.mjs';
import { redisDown, redisStatus, redisUp } from './redis.mjs';

/**
 * @typedef {object} StackConfig
 * @property {string} root repository root (derived from this file's location)
 * @property {string} stackDir data, logs, jars and pid files; URS_STACK_DIR, default <root>/.stack
 * @property {number} kafkaPort broker port on 127.0.0.1; URS_STACK_KAFKA_PORT, default 9092
 * @property {number} controllerPort KRaft controller port on 127.0.0.1; URS_STACK_KAFKA_CONTROLLER_PORT, default kafkaPort + 1
 * @property {string} kafkaHeapOpts JVM heap flags; URS_STACK_KAFKA_HEAP_OPTS, default "-Xms256m -Xmx512m"
 * @property {number} readyTimeoutMs how long `up` waits for readiness, in ms; URS_STACK_READY_TIMEOUT_MS, default 120000
 * @property {string} redisUrl REDIS_URL, default redis://127.0.0.1:6379
 */

/**
 * @param {NodeJS.ProcessEnv} env
 * @returns {StackConfig}
 */
export function stackConfig(env) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const kafkaPort = port(env, 'URS_STACK_KAFKA_PORT', 9092);
  return {
    root,
    stackDir: path.resolve(root, env['URS_STACK_DIR'] ?? '.stack'),
    kafkaPort,
    controllerPort: port(env, 'URS_STACK_KAFKA_CONTROLLER_PORT', kafkaPort + 1),
    kafkaHeapOpts: env['URS_STACK_KAFKA_HEAP_OPTS'] ?? '-Xms256m -Xmx512m',
    readyTimeoutMs: positiveInt(env, 'URS_STACK_READY_TIMEOUT_MS', 120_000),
    redisUrl: env['REDIS_URL'] ?? 'redis://127.0.0.1:6379',
  };
}

/**
 * @param {NodeJS.ProcessEnv} env
 * @param {string} name
 * @param {number} fallback
 */
function positiveInt(env, name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

/**
 * @param {NodeJS.ProcessEnv} env
 * @param {string} name
 * @param {number} fallback
 */
function port(env, name, fallback) {
  const n = positiveInt(env, name, fallback);
  if (n > 65535) throw new Error(`${name} must be a TCP port (1-65535), got "${n}"`);
  return n;
}

/** @param {string} line */
const say = (line) => process.stderr.write(`${line}\n`);

/**
 * @param {string} command
 * @param {string[]} flags
 * @returns {Promise<number>} exit code
 */
async function main(command, flags) {
  const cfg = stackConfig(process.env);
  const json = flags.includes('--json');
  const lockFile = path.join(cfg.stackDir, 'stack.lock');
  if (command === 'up') {
    const started = Date.now();
    const only = flags.find((f) => f.startsWith('--only='))?.slice('--only='.length);
    if (only !== undefined && only !== 'kafka' && only !== 'redis')
      throw new Error(`--only must be kafka or redis, got "${only}"`);
    const result = await withLock(lockFile, cfg.readyTimeoutMs, async () => {
      const kafka = only === 'redis' ? await kafkaStatus(cfg) : await kafkaUp(cfg);
      const redis = only === 'kafka' ? await redisStatus(cfg) : await redisUp(cfg);
      return { kafka, redis };
    });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    say(
      `kafka  ${result.kafka.state.padEnd(8)} ${result.kafka.brokers.join(',')}${result.kafka.pid ? ` pid ${result.kafka.pid}` : ''}${result.kafka.detail ? ` (${result.kafka.detail})` : ''}`,
    );
    say(
      `redis  ${result.redis.state.padEnd(8)} ${result.redis.url}${result.redis.pid ? ` pid ${result.redis.pid}` : ''}${result.redis.detail ? ` (${result.redis.detail})` : ''}`,
    );
    say(
      `ready in ${seconds}s: KAFKA_BROKERS=${result.kafka.brokers.join(',')} REDIS_URL=${result.redis.url}`,
    );
    if (json)
      process.stdout.write(
        `${JSON.stringify({ kafkaBrokers: result.kafka.brokers.join(','), redisUrl: result.redis.url, kafka: result.kafka, redis: result.redis })}\n`,
      );
    return 0;
  }
  if (command === 'down') {
    const result = await withLock(lockFile, cfg.readyTimeoutMs, async () => {
      const kafka = await kafkaDown(cfg);
      const redis = await redisDown(cfg);
      if (flags.includes('--wipe')) kafkaWipe(cfg);
      return { kafka, redis };
    });
    say(`kafka  ${result.kafka}`);
    say(`redis  ${result.redis}`);
    if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  }
  if (command === 'status') {
    const kafka = await kafkaStatus(cfg);
    const redis = await redisStatus(cfg);
    say(
      `kafka  ${kafka.state.padEnd(8)} ${kafka.brokers.join(',')} ${kafka.ready ? 'answers' : 'does not answer'}${kafka.pid ? ` pid ${kafka.pid}` : ''}${kafka.rssMb ? ` rss ${kafka.rssMb} MB` : ''}`,
    );
    say(
      `redis  ${redis.state.padEnd(8)} ${redis.url} ${redis.ready ? 'answers' : 'does not answer'}${redis.pid ? ` pid ${redis.pid}` : ''}`,
    );
    if (json) process.stdout.write(`${JSON.stringify({ kafka, redis })}\n`);
    return kafka.ready && redis.ready ? 0 : 1;
  }
  say('usage: stack.mjs up|down|status [--json] [--wipe]');
  return 2;
}

main(process.argv[2] ?? '', process.argv.slice(3)).then(
  (code) => process.exit(code),
  (err) => {
    say(`stack: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);

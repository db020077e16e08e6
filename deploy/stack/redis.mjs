// @ts-check
// The Redis half of the local stack: use the server at REDIS_URL when it answers PING, else start a
// loopback `redis-server` with its data under <stack>/redis, else say what to install.
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { onPath, ownedPid, sleep, startDetached, stopProcess, tail } from './proc.mjs';

/**
 * @typedef {import('./stack.mjs').StackConfig} StackConfig
 * @typedef {{ state: 'running' | 'external' | 'down', url: string, pid?: number, ready: boolean, detail?: string }} RedisStatus
 */

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

/** @param {StackConfig} cfg */
function paths(cfg) {
  const dir = path.join(cfg.stackDir, 'redis');
  return { dir, pidFile: path.join(dir, 'redis.pid'), logFile: path.join(dir, 'redis.log') };
}

/**
 * Writes `requirepass` into a config file only this user can read, for redis-server to take as its first
 * argument: on the command line (`--requirepass`) the password would show in `ps` to every user for as long
 * as the server runs. Returns the file's path.
 * @param {string} dir
 * @param {string} password
 * @returns {string}
 */
export function writePasswordConfig(dir, password) {
  const file = path.join(dir, 'auth.conf');
  // A double-quoted config argument: backslashes and quotes escaped, as redis-server reads them.
  const quoted = `"${password.replace(/[\\"]/g, '\\$&')}"`;
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, `requirepass ${quoted}\n`, { mode: 0o600 });
  return file;
}

/**
 * Our redis-server is recognised by its pid file plus its command line: `redis-server --port <port> …`
 * as started, which redis-server soon rewrites to `redis-server 127.0.0.1:<port>`.
 * @param {StackConfig} cfg
 * @returns {(commandLine: string) => boolean}
 */
const marker = (cfg) => {
  const port = new URL(cfg.redisUrl).port || '6379';
  return (cmd) =>
    cmd.startsWith('redis-server') && (cmd.includes(`:${port}`) || cmd.includes(`--port ${port}`));
};

/**
 * Whether the server at `url` answers PING.
 * @param {string} url
 * @param {number} timeoutMs connect timeout in milliseconds
 * @returns {Promise<boolean>}
 */
export async function redisAnswers(url, timeoutMs) {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
    // Redis < 7.2 rejects CLIENT SETINFO, which ioredis >= 5.8 sends on connect.
    disableClientInfo: true,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/**
 * @param {StackConfig} cfg
 * @returns {Promise<RedisStatus>}
 */
export async function redisUp(cfg) {
  const p = paths(cfg);
  const url = cfg.redisUrl;
  const ours = ownedPid(p.pidFile, marker(cfg));
  if (await redisAnswers(url, 1000)) {
    return ours === undefined
      ? {
          state: 'external',
          url,
          ready: true,
          detail: 'not started by this stack; stack:down leaves it running',
        }
      : { state: 'running', url, pid: ours, ready: true };
  }
  const parsed = new URL(url);
  if (!LOOPBACK.has(parsed.hostname)) {
    throw new Error(`no Redis answers at ${url}, and the stack only starts one on a loopback address`);
  }
  if (!onPath('redis-server')) {
    throw new Error(
      `no Redis answers at ${url} and redis-server is not installed: install Redis 7 (apt-get install redis-server, brew install redis) or set REDIS_URL`,
    );
  }
  fs.mkdirSync(p.dir, { recursive: true });
  const port = parsed.port === '' ? '6379' : parsed.port;
  const args = [
    '--port',
    port,
    '--bind',
    '127.0.0.1',
    '--dir',
    p.dir,
    '--daemonize',
    'no',
    '--appendonly',
    'no',
  ];
  if (parsed.password !== '') args.unshift(writePasswordConfig(p.dir, decodeURIComponent(parsed.password)));
  const pid = startDetached('redis-server', args, { logFile: p.logFile, pidFile: p.pidFile, cwd: p.dir });
  const deadline = Date.now() + cfg.readyTimeoutMs;
  while (Date.now() < deadline) {
    if (ownedPid(p.pidFile, marker(cfg)) === undefined) {
      throw new Error(`redis-server exited during start-up; last log lines:\n${tail(p.logFile, 20)}`);
    }
    if (await redisAnswers(url, 1000)) return { state: 'running', url, pid, ready: true, detail: 'started' };
    await sleep(100);
  }
  await stopProcess(pid, 5000);
  throw new Error(`redis-server on port ${port} not ready after ${cfg.readyTimeoutMs} ms; log: ${p.logFile}`);
}

/**
 * Stops the redis-server this stack started; a Redis it found running is left alone.
 * @param {StackConfig} cfg
 */
export async function redisDown(cfg) {
  const p = paths(cfg);
  const pid = ownedPid(p.pidFile, marker(cfg));
  fs.rmSync(p.pidFile, { force: true });
  if (pid === undefined) return 'not running (nothing started by stack:up)';
  await stopProcess(pid, 10_000);
  return `stopped pid ${pid}`;
}

/**
 * @param {StackConfig} cfg
 * @returns {Promise<RedisStatus>}
 */
export async function redisStatus(cfg) {
  const pid = ownedPid(paths(cfg).pidFile, marker(cfg));
  const ready = await redisAnswers(cfg.redisUrl, 1000);
  if (pid !== undefined) return { state: 'running', url: cfg.redisUrl, pid, ready };
  return { state: ready ? 'external' : 'down', url: cfg.redisUrl, ready };
}

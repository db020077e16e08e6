import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer, createConnection } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ProcessGroup, Child } from './procs';

const run = promisify(execFile);

export interface StackInfo {
  kafkaBrokers: string[];
  /** Whether the bench started the broker (and so stops it at the end). */
  startedKafka: boolean;
  /** The broker's process when the local stack runs it (for its CPU time); undefined for an external broker. */
  kafkaPid: number | undefined;
}

interface StackStatus {
  kafka: { ready: boolean; brokers: string[]; pid?: number };
  redis: { ready: boolean; url: string };
}

async function stackCommand(root: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await run(process.execPath, [join(root, 'deploy/stack/stack.mjs'), ...args], {
      cwd: root,
      timeout: 180_000,
      maxBuffer: 1 << 20,
    });
    return stdout;
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string; message: string };
    if (args[0] === 'status' && failed.stdout) return failed.stdout;
    throw new Error(`stack ${args.join(' ')} failed: ${failed.stderr || failed.message}`);
  }
}

/** `npm run stack:up` (reusing a running broker); only the Kafka half when the bench brings its own Redis. */
export async function ensureStack(root: string, kafkaOnly: boolean): Promise<StackInfo> {
  const before = JSON.parse(await stackCommand(root, ['status', '--json'])) as StackStatus;
  const up = JSON.parse(
    await stackCommand(root, ['up', '--json', ...(kafkaOnly ? ['--only=kafka'] : [])]),
  ) as {
    kafkaBrokers: string;
  };
  const after = JSON.parse(await stackCommand(root, ['status', '--json'])) as StackStatus;
  return {
    kafkaBrokers: up.kafkaBrokers.split(','),
    startedKafka: !before.kafka.ready,
    kafkaPid: after.kafka.pid,
  };
}

export async function stopStack(root: string): Promise<void> {
  await stackCommand(root, ['down']);
}

/** A free TCP port on the loopback interface (closed again before use; the race is acceptable here). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Sends raw RESP commands on a fresh connection and returns the replies as text (bench-only, tiny). */
export async function redisCommand(url: string, ...args: string[]): Promise<string> {
  const { hostname, port } = new URL(url);
  const payload = `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`;
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: hostname || '127.0.0.1', port: Number(port || 6379) });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`redis ${args[0]} timed out`));
    }, 10_000);
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (chunk) => {
      data += chunk.toString('utf8');
      const bulk = /^\$(\d+)\r\n/.exec(data);
      const complete = bulk ? data.length >= bulk[0].length + Number(bulk[1]) + 2 : /\r\n$/.test(data);
      if (complete) {
        clearTimeout(timer);
        socket.end();
        resolve(data);
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/** A redis-server of the bench's own on a free loopback port: no persistence, nobody else's commands. */
export async function startPrivateRedis(
  group: ProcessGroup,
  root: string,
  runDir: string,
): Promise<{ url: string; child: Child }> {
  const port = await freePort();
  const dir = join(runDir, 'redis');
  mkdirSync(dir, { recursive: true });
  const child = group.spawn({
    name: 'redis',
    command: 'redis-server',
    args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    env: process.env,
    cwd: root,
    logFile: join(runDir, 'redis.log'),
  });
  const url = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if ((await redisCommand(url, 'PING')).startsWith('+PONG')) return { url, child };
    } catch {
      // not listening yet
    }
    if (child.done() || Date.now() > deadline)
      throw new Error('the private redis-server did not start (is redis-server installed?)');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Calls per command from `INFO commandstats` (commands run inside Lua scripts count too). */
export function parseCommandStats(info: string): Record<string, number> {
  const calls: Record<string, number> = {};
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm))
    calls[match[1] as string] = Number(match[2]);
  return calls;
}

export async function commandStats(url: string): Promise<Record<string, number>> {
  return parseCommandStats(await redisCommand(url, 'INFO', 'commandstats'));
}

/** Deletes the keys under a prefix (shared Redis only; the private one goes away with its process). */
export async function deleteKeys(url: string, prefix: string): Promise<void> {
  // EVAL keeps it to one round trip per 1,000 keys without a client library.
  const script = `local c = 0
local cursor = '0'
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do redis.call('UNLINK', k); c = c + 1 end
until cursor == '0'
return c`;
  await redisCommand(url, 'EVAL', script, '0', `${prefix}*`);
  await redisCommand(url, 'EVAL', script, '0', `b_${prefix}*`);
}

import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type Server, type Socket, connect, createServer } from 'node:net';
import Redis from 'ioredis';
import { startRedis, stopRedis } from './own-redis';
import { freePort } from './ports';
import { waitFor } from './wait';

/**
 * Two Redis servers of the test's own, a primary and its replica, behind one address, as a managed Redis
 * with a failover endpoint looks to its clients. `failover()` does what such a service does: the replica
 * becomes the primary, the old primary becomes its replica, and the address leads new connections to the new
 * primary. Connections made before stay where they were: open, answering PING, refusing every write with
 * READONLY, until the client reconnects.
 */
export interface RedisFailover {
  /** The address clients use: `redis://127.0.0.1:<proxy port>`. */
  url: string;
  /** Swaps the roles of the two servers, and sends new connections to the new primary. */
  failover(): Promise<void>;
  /** The address of the server that is replica now, for a client that is to stay on a replica. */
  replicaUrl(): string;
  /** A client on the server that is primary now, for the test's own checks. */
  primary(): Redis;
  /** Stops the address and both servers. */
  close(): Promise<void>;
}

interface OwnRedis {
  port: number;
  process: ChildProcess;
  admin: Redis;
  /** Where it writes the RDB a replica syncs, not the working directory. */
  dir: string;
}

async function startOwnRedis(): Promise<OwnRedis> {
  const port = await freePort();
  const dir = await mkdtemp(path.join(tmpdir(), 'urs-failover-'));
  const process = await startRedis(port, ['--dir', dir]);
  const admin = new Redis(port, '127.0.0.1', { disableClientInfo: true, maxRetriesPerRequest: 3 });
  return { port, process, admin, dir };
}

async function replicate(replica: OwnRedis, primary: OwnRedis): Promise<void> {
  await replica.admin.replicaof('127.0.0.1', primary.port);
  await waitFor(async () => (await replica.admin.info('replication')).includes('master_link_status:up'), {
    description: `the Redis on ${replica.port} to sync from ${primary.port}`,
  });
}

/** A replication offset `INFO replication` gives: a primary's `master_repl_offset`, a replica's `slave_repl_offset`. */
async function replicationOffset(own: OwnRedis, field: string): Promise<number> {
  const info = await own.admin.info('replication');
  return Number(new RegExp(`^${field}:(\\d+)`, 'm').exec(info)?.[1] ?? -1);
}

export async function startRedisFailover(): Promise<RedisFailover> {
  let primary = await startOwnRedis();
  let replica = await startOwnRedis();
  await replicate(replica, primary);
  const sockets = new Set<Socket>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  };
  const proxy: Server = createServer((client) => {
    const server = connect(primary.port, '127.0.0.1');
    track(client);
    track(server);
    client.pipe(server);
    server.pipe(client);
    client.on('close', () => server.destroy());
    server.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const { port } = proxy.address() as { port: number };
  return {
    url: `redis://127.0.0.1:${port}`,
    async failover() {
      const [old, promoted] = [primary, replica];
      // A planned failover: the replica has every write acknowledged so far before it takes over. Of every
      // client: WAIT counts only the writes of the connection that asks (here none), so it is no such wait.
      const written = await replicationOffset(old, 'master_repl_offset');
      await waitFor(async () => (await replicationOffset(promoted, 'slave_repl_offset')) >= written, {
        description: `the Redis on ${promoted.port} to have every write of ${old.port}`,
      });
      await promoted.admin.replicaof('NO', 'ONE');
      primary = promoted;
      replica = old;
      await replicate(old, promoted);
    },
    replicaUrl: () => `redis://127.0.0.1:${replica.port}`,
    primary: () => primary.admin,
    async close() {
      await new Promise<void>((resolve) => {
        proxy.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
      for (const own of [primary, replica]) {
        own.admin.disconnect();
        await stopRedis(own.process);
        await rm(own.dir, { recursive: true, force: true });
      }
    },
  };
}

import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Ports of one jest worker's slice (see freePort). */
const SLICE = 1_000;
/** The lowest port handed out: below it are the well-known ports of servers a machine may run. */
const LOWEST = 10_000;

/**
 * The first port the kernel hands out on its own (to `listen(0)` and to outgoing connections); 32768 where
 * the range cannot be read (Linux's default, below macOS's 49152).
 */
export function ephemeralPortStart(rangeFile = '/proc/sys/net/ipv4/ip_local_port_range'): number {
  try {
    const low = Number(readFileSync(rangeFile, 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(low) && low >= LOWEST + SLICE) return low;
  } catch {
    // No such file: not Linux.
  }
  return 32_768;
}

/**
 * The ports `freePort` hands out in the jest worker `workerId` (1 outside jest): the workers' slices of
 * the ports below the kernel's ephemeral range never overlap.
 */
export function portSlice(
  workerId: number,
  ephemeralStart = ephemeralPortStart(),
): { from: number; to: number } {
  const slices = Math.floor((ephemeralStart - LOWEST) / SLICE);
  const from = LOWEST + ((workerId - 1) % slices) * SLICE;
  return { from, to: from + SLICE - 1 };
}

function canListen(port: number): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

const slice = portSlice(Number(process.env['JEST_WORKER_ID'] ?? '1'));
let next = Math.floor(Math.random() * SLICE);

/**
 * A TCP port of 127.0.0.1 free right now: listened on and closed again, so nothing listens on it until a test
 * starts something there (a Redis or a broker of its own, a service's HTTP port), or names it as a Kafka or
 * Redis that does not answer. It is below the kernel's ephemeral range, so while it is not listened on (a
 * broker stopped to be restarted, a Redis started later) no `listen(0)` and no outgoing connection of any
 * process takes it; and in this jest worker's own slice, taken in turn, so that tests running side by side
 * in other workers, or earlier in this one, are not handed the same port.
 */
export async function freePort(): Promise<number> {
  for (let tried = 0; tried < SLICE; tried++) {
    const port = slice.from + (next++ % SLICE);
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port in ${slice.from}..${slice.to}`);
}

/** A port of 127.0.0.1 listened on only to count who connects to it (see `watchedPort`). */
export interface WatchedPort {
  port: number;
  /** The connections made to it so far (each closed at once). */
  connections(): number;
  close(): Promise<void>;
}

/**
 * A free port (`freePort`) listened on, each connection counted and closed at once: named as a Kafka or a
 * Redis, it tells whether a process tried to connect, which nothing listening would not.
 */
export async function watchedPort(): Promise<WatchedPort> {
  const port = await freePort();
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    port,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

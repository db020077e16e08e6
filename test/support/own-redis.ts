import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { waitFor } from './wait';

// A Redis of a test's own, for the tests that make Redis fail on purpose (stopped, or refusing writes with
// `maxmemory 1` and `noeviction`): the shared Redis is never stopped, nor its configuration changed.

/**
 * A throwaway redis-server on `port`, nothing saved: the shared Redis is never stopped by a test. `args` are
 * more of redis-server's options (a replica's `--dir`: a replica writes what it syncs into its directory).
 */
export async function startRedis(port: number, args: string[] = []): Promise<ChildProcess> {
  const options = ['--port', String(port), '--save', '', '--appendonly', 'no', ...args];
  const child = spawn('redis-server', options, { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => void (output += chunk.toString()));
  await waitFor(() => output.includes('Ready to accept connections'), { timeoutMs: 10_000 });
  return child;
}

export async function stopRedis(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  await once(child, 'exit');
}

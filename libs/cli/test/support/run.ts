import { PassThrough, Readable } from 'node:stream';
import type { Command } from '../../src/command';

export interface CommandRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a subcommand on in-memory streams (stdin empty unless given) and returns its exit code and output. */
export async function runCommand(
  command: Command,
  argv: string[],
  io: { stdin?: NodeJS.ReadableStream; env?: NodeJS.ProcessEnv } = {},
): Promise<CommandRun> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (chunk: Buffer) => out.push(chunk));
  stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const code = await command(argv, {
    stdin: io.stdin ?? Readable.from([]),
    stdout,
    stderr,
    env: io.env ?? {},
  });
  return { code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
}

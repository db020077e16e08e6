import type { Command } from './command';

const USAGE = `usage: urs <command> [options]

commands:
  score       score NDJSON machine records from stdin with the ZTA model
  defender    read devices and vulnerabilities from a Defender for Endpoint tenant

Run 'urs <command> --help' for a command's options.`;

/** Loaded lazily, so `urs score` never pays for the Defender client's imports. */
const commands: Record<string, () => Promise<Command>> = {
  score: async () => (await import('./commands/score')).scoreCommand,
  defender: async () => (await import('./commands/defender')).defenderCommand,
};

/** Runs the CLI and resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--help' || name === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (!name) {
    // No command is bad usage: its usage goes where errors go.
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const load = commands[name];
  if (!load) {
    // Never quoted: a secret pasted in its place would land on stderr (and in logs).
    process.stderr.write(
      `urs: unknown command (argument 1, not shown): it must be ${Object.keys(commands).join(' or ')}\n${USAGE}\n`,
    );
    return 2;
  }
  const command = await load();
  return command(rest, {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
  });
}

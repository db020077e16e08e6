import { spawn } from 'node:child_process';
import { join } from 'node:path';

/**
 * Runs a TypeScript file in a child process as jest runs tests (swc, `@urs/<lib>` from the sources):
 * `spawn(process.execPath, [RUN_TS, file, ...args])`.
 */
export const RUN_TS = join(__dirname, 'run-ts.js');

/** A service's `main.ts` run from the sources in a process of its own (see `runMain`). */
export interface MainRun {
  /** Its output lines (stdout and stderr), as parsed JSON (`{ text }` for a line that is not). */
  lines: Record<string, unknown>[];
  /** The exit code, or undefined when it had not exited within `ms` (it is then killed). */
  exitWithin(ms: number): Promise<number | null | undefined>;
}

/** Runs `main` (a service's `src/main.ts`) with `env` and nothing else of this process's environment but PATH. */
export function runMain(main: string, env: Record<string, string>): MainRun {
  const child = spawn(process.execPath, [RUN_TS, main], {
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream.on('data', (chunk: Buffer) => {
      const parts = (rest + chunk.toString('utf8')).split('\n');
      rest = parts.pop() ?? '';
      for (const line of parts.filter((part) => part.length > 0)) {
        try {
          lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          lines.push({ text: line });
        }
      }
    });
  }
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    lines,
    async exitWithin(ms) {
      const timeout = new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), ms).unref());
      const code = await Promise.race([exited, timeout]);
      if (code === undefined) {
        child.kill('SIGKILL');
        await exited;
      }
      return code;
    },
  };
}

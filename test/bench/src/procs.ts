import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, createWriteStream, openSync, readFileSync } from 'node:fs';

/** A child process the bench started; its output goes to a log file. */
export interface Child {
  name: string;
  pid: number;
  process: ChildProcess;
  logFile: string;
  /** Resolves with the exit code (or the signal name) once the process ended. */
  exited: Promise<number | string>;
  /** Whether it ended. */
  done(): boolean;
}

export interface SpawnOptions {
  name: string;
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd: string;
  logFile: string;
  /** Receives each stdout line as well (stdout still goes to the log file). */
  onStdoutLine?: (line: string) => void;
}

/**
 * Every process the bench starts, so all of them end whatever happens: a normal finish, an error, or
 * Ctrl-C. `stopAll` asks with SIGTERM (services drain and commit), then SIGKILLs what is left after
 * `graceMs`; a last-resort `exit` hook SIGKILLs anything still running.
 */
export class ProcessGroup {
  private readonly children: Child[] = [];

  constructor() {
    process.on('exit', () => {
      for (const child of this.children) if (!child.done()) child.process.kill('SIGKILL');
    });
  }

  spawn(options: SpawnOptions): Child {
    const out = openSync(options.logFile, 'a');
    const proc = spawn(options.command, options.args, {
      cwd: options.cwd,
      env: options.env,
      stdio: ['ignore', options.onStdoutLine ? 'pipe' : out, out],
    });
    closeSync(out);
    let ended = false;
    const exited = new Promise<number | string>((resolve) => {
      proc.once('exit', (code, signal) => {
        ended = true;
        resolve(code ?? signal ?? 'unknown');
      });
      proc.once('error', () => {
        ended = true;
        resolve('spawn-error');
      });
    });
    if (options.onStdoutLine && proc.stdout) {
      const onLine = options.onStdoutLine;
      let pending = '';
      proc.stdout.on('data', (chunk: Buffer) => {
        pending += chunk.toString('utf8');
        let newline = pending.indexOf('\n');
        while (newline >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          onLine(line);
          newline = pending.indexOf('\n');
        }
      });
      proc.stdout.pipe(createWriteStream(options.logFile, { flags: 'a' }));
    }
    if (proc.pid === undefined) throw new Error(`could not start ${options.name} (${options.command})`);
    const child: Child = {
      name: options.name,
      pid: proc.pid,
      process: proc,
      logFile: options.logFile,
      exited,
      done: () => ended,
    };
    this.children.push(child);
    return child;
  }

  /** Stops the given children (default: all still running), newest first. */
  async stop(children: Child[] = this.children, graceMs = 20_000): Promise<void> {
    const running = children.filter((child) => !child.done()).reverse();
    for (const child of running) child.process.kill('SIGTERM');
    await Promise.all(
      running.map(async (child) => {
        const timer = setTimeout(() => child.process.kill('SIGKILL'), graceMs);
        await child.exited;
        clearTimeout(timer);
      }),
    );
  }

  stopAll(graceMs = 20_000): Promise<void> {
    return this.stop(this.children, graceMs);
  }
}

/** The last `lines` lines of a log file, for an error message. */
export function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8')
      .split('\n')
      .slice(-lines - 1)
      .join('\n');
  } catch {
    return '(no log)';
  }
}

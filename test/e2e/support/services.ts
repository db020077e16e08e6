import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

/** The pipeline's services, each its own process started from its build (`services/<name>/dist/main.js`). */
export const SERVICES = ['registrar', 'poller', 'vuln-fetcher', 'scorer', 'publisher'] as const;
export type ServiceName = (typeof SERVICES)[number];

const ROOT = resolve(__dirname, '../../..');

export interface ServiceProcess {
  name: ServiceName;
  child: ChildProcess;
  /** Every JSON log line written so far. */
  lines: Record<string, unknown>[];
  /** Resolves with the exit code (or signal) once the process ended. */
  exited: Promise<number | string>;
}

/**
 * Runs the services as separate processes, each with the given environment, and keeps their JSON log
 * lines (in memory for the test, and in `<logDir>/<name>.log` to read when a test fails).
 */
export class ServiceGroup {
  private readonly running = new Map<ServiceName, ServiceProcess>();
  private readonly logs = new Map<ServiceName, WriteStream>();

  constructor(
    private readonly env: (name: ServiceName) => NodeJS.ProcessEnv,
    readonly logDir: string,
  ) {
    mkdirSync(logDir, { recursive: true });
  }

  get(name: ServiceName): ServiceProcess {
    const service = this.running.get(name);
    if (!service) throw new Error(`${name} is not running`);
    return service;
  }

  /** Starts a service and resolves once it logged "started" (it joined Kafka and Redis). */
  async start(name: ServiceName, timeoutMs = 60_000): Promise<ServiceProcess> {
    const log = this.logs.get(name) ?? createWriteStream(join(this.logDir, `${name}.log`), { flags: 'a' });
    this.logs.set(name, log);
    const child = spawn(process.execPath, [join(ROOT, 'services', name, 'dist', 'main.js')], {
      cwd: ROOT,
      env: this.env(name),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: Record<string, unknown>[] = [];
    const exited = new Promise<number | string>((done) =>
      child.once('exit', (code, signal) => done(code ?? signal ?? -1)),
    );
    const service: ServiceProcess = { name, child, lines, exited };
    this.running.set(name, service);
    let started: (() => void) | undefined;
    const ready = new Promise<void>((done) => (started = done));
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on('line', (line) => {
        log.write(`${line}\n`);
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          lines.push(parsed);
          if (parsed['message'] === 'started') started?.();
        } catch {
          // Not a JSON line (a crash trace): kept in the log file only.
        }
      });
    }
    const timeout = new Promise<never>((_, fail) =>
      setTimeout(
        () => fail(new Error(`${name} did not start within ${timeoutMs} ms; see ${this.logDir}/${name}.log`)),
        timeoutMs,
      ).unref(),
    );
    const died = exited.then((code) => {
      throw new Error(`${name} exited (${code}) while starting; see ${this.logDir}/${name}.log`);
    });
    await Promise.race([ready, timeout, died]);
    return service;
  }

  async startAll(): Promise<void> {
    await Promise.all(SERVICES.map((name) => this.start(name)));
  }

  /** Sends a signal and waits for the exit. */
  async kill(name: ServiceName, signal: NodeJS.Signals): Promise<number | string> {
    const service = this.get(name);
    this.running.delete(name);
    if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill(signal);
    return service.exited;
  }

  /** SIGTERM to every running service (SIGKILL after `graceMs`), then closes the log files. */
  async stopAll(graceMs = 20_000): Promise<void> {
    await Promise.all(
      [...this.running.keys()].map(async (name) => {
        const service = this.get(name);
        const timer = setTimeout(() => service.child.kill('SIGKILL'), graceMs);
        await this.kill(name, 'SIGTERM');
        clearTimeout(timer);
      }),
    );
    for (const log of this.logs.values()) log.end();
  }
}

/** The first value of a log field among a service's lines, e.g. the port it listens on. */
export function logField(service: ServiceProcess, message: string, field: string): unknown {
  return service.lines.find((line) => line['message'] === message)?.[field];
}

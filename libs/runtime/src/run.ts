import { redactText, type Logger } from '@urs/logging';
import { errorMessage, untilShutdownSignal } from '@urs/resilience';
import { ServiceStoppedError, serviceBasics, startWith } from './service';
import type { RunningService, ServiceBasics, ServiceOptions } from './service-types';

/**
 * A service's whole life, for `main.ts`: start, run until SIGTERM or SIGINT, stop gracefully within
 * the configured time, and exit with the stop's code. The signals are listened to from the very start: one
 * that comes while the service starts aborts `context.stopping` and gives the start up once the step under
 * way returns (its topics), at once while it waits for Redis or runs setup (also on a Redis lost again),
 * exiting 0 when everything built closed cleanly. A second signal ends the process at once (Node's
 * default). Start-up failures exit 1 with the reason: a bad variable, shared or the
 * service's own (`settings`), before anything connects; no broker; a setup that failed. So do a runner or
 * another part that stopped for good (`failed`, after a graceful stop, so an orchestrator starts the
 * service again), a stop that could not close everything, and a stop that took longer than
 * URS_SHUTDOWN_TIMEOUT_MS (its log names the step it was waiting for).
 */
export async function runService<S = undefined>(options: ServiceOptions<S>): Promise<void> {
  const stop = new AbortController();
  let signal: NodeJS.Signals | undefined;
  const signalled = untilShutdownSignal().then((name) => {
    signal = name;
    stop.abort();
    return name;
  });
  let basics: ServiceBasics<S>;
  try {
    basics = serviceBasics(options);
  } catch (error) {
    startFailed(options.name, error);
  }
  const { config, logger } = basics;
  let step = 'start';
  let timer: NodeJS.Timeout | undefined;
  // Kept referenced: were nothing else left to keep the process alive, a close still pending must not end
  // it with exit code 0.
  const startTimer = (): void => {
    timer ??= setTimeout(() => {
      logger.error('graceful stop timed out, exiting', {
        shutdownTimeoutMs: config.shutdownTimeoutMs,
        waitingFor: step,
      });
      process.exit(1);
    }, config.shutdownTimeoutMs);
  };
  stop.signal.addEventListener('abort', () => {
    logger.info('stopping', { signal, step });
    startTimer();
  });
  let service: RunningService<S>;
  try {
    service = await startWith({ ...options, stop: stop.signal, onStep: (name) => (step = name) }, basics);
  } catch (error) {
    if (error instanceof ServiceStoppedError)
      exit(logger, error.closedCleanly ? 0 : 1, 'stopped while starting');
    startFailed(options.name, error);
  }
  const outcome = await Promise.race([
    signalled.then((name) => ({ signal: name })),
    service.failed.then((error) => ({ error })),
  ]);
  let code = 0;
  if ('error' in outcome) {
    logger.error('a consumer stopped for good, stopping to be started again', { error: outcome.error });
    code = 1;
    startTimer();
  }
  if (!(await service.close())) code = 1;
  exit(logger, code, 'stopped');
}

/**
 * Exits now rather than once the event loop drains: a socket nothing closes (a token request's TLS
 * connection to Entra ID, kept alive) would hold the process until the graceful stop timed out, and turn
 * a clean stop into exit code 1.
 */
function exit(logger: Logger, code: number, message: string): never {
  logger.info(message, { exitCode: code });
  process.exit(code);
}

/**
 * Exits 1 with the reason, straight to stderr (the logger may not exist yet), its secrets redacted as the
 * logger's would be (a setting's error quotes the value it got): a half-built service may hold sockets or
 * timers (a Kafka client mid-reconnect) that would keep the process alive, and an orchestrator must see the
 * failure to restart it.
 */
function startFailed(name: string, error: unknown): never {
  const reason = {
    name: (error as Error).name,
    code: (error as { code?: unknown }).code,
    message: redactText(errorMessage(error)),
  };
  process.stderr.write(
    `${JSON.stringify({ level: 'error', service: name, message: 'start failed', error: reason })}\n`,
  );
  process.exit(1);
}

import type Redis from 'ioredis';
import type { Kafka } from 'kafkajs';
import {
  bootstrapTopics,
  createKafka,
  createPublisher,
  topicSpecs,
  type ConsumerRunner,
  type Publisher,
} from '@urs/bus';
import { serviceConfig, topicLayout, type Env, type ServiceConfig } from '@urs/config';
import { createLogger, type Logger } from '@urs/logging';
import { closeAll, untilShutdownSignal, type Closer } from '@urs/resilience';
import { closeRedis, createRedis } from '@urs/store';
import { Registry, startHealthServer, type HealthServer } from '@urs/telemetry';
import { watchRedis } from './redis-health';

/** What every service gets before its own parts are built. */
export interface ServiceContext {
  env: Env;
  config: ServiceConfig;
  logger: Logger;
  metrics: Registry;
  redis: Redis;
  kafka: Kafka;
  publisher: Publisher;
}

/** What a service's setup built. Runners are started by the runtime, and closed first on stop. */
export interface ServiceParts {
  runners?: ConsumerRunner[];
  /** Started after the runners (e.g. a scheduler or an HTTP server); called once. */
  start?: () => Promise<void>;
  /** Closed after the runners and before the shared clients, in this order. */
  closers?: Closer[];
  /** Extra readiness beyond "every runner joined its group". */
  isReady?: () => boolean;
  /**
   * Resolves when a part of the service other than its runners stopped working for good (e.g. a consumer
   * of its own that Kafka stopped): the service then stops to be started again, as for a runner.
   */
  failed?: () => Promise<Error>;
}

export interface ServiceOptions {
  /** The service name, as in logs and metrics. */
  name: string;
  /**
   * /healthz, /readyz and /metrics port unless URS_METRICS_PORT says otherwise. Default: the stage's own
   * (`DEFAULT_METRICS_PORTS` in @urs/config), 0 (a free port) for other names.
   */
  defaultMetricsPort?: number;
  env?: Env;
  setup: (context: ServiceContext) => Promise<ServiceParts>;
}

export interface RunningService {
  context: ServiceContext;
  health: HealthServer;
  /**
   * Resolves when one of the runners stopped consuming for good (see `ConsumerRunner.failed`), or the
   * service's own parts did (`ServiceParts.failed`): the service looks alive and does nothing, so it should
   * stop and be started again.
   */
  failed: Promise<Error>;
  /**
   * Stops intake, drains, closes every resource even if one fails. Resolves false when something failed to
   * close (each failure is logged). Idempotent.
   */
  close(): Promise<boolean>;
}

/**
 * Builds the shared clients, makes sure every topic exists, runs the service's setup, starts its
 * runners and the health endpoints. The order of close is the reverse of dependency: runners (stop
 * intake, finish in-flight work, commit), the service's own closers, the publisher, Redis, health.
 */
export async function startService(options: ServiceOptions): Promise<RunningService> {
  const env = options.env ?? process.env;
  const config = serviceConfig(env, options.name, options.defaultMetricsPort);
  const logger = createLogger({ service: options.name, level: config.logLevel });
  const metrics = new Registry();
  const redis = createRedis(config.redis, { connectionName: config.kafka.clientId });
  // At once: the watch is the client's 'error' listener, and the client starts connecting now.
  const redisWatch = watchRedis(redis, { logger, metrics });
  const kafka = createKafka(config.kafka, logger);
  const closers: Closer[] = [];
  let parts: ServiceParts = {};
  let health: HealthServer | undefined;
  let stopping = false;
  try {
    const admin = kafka.admin();
    await admin.connect();
    try {
      const layout = topicLayout(env);
      const created = await bootstrapTopics(admin, topicSpecs(config.topics, layout.partitions), {
        logger,
        replicationFactor: layout.replicationFactor,
      });
      if (created.length > 0) logger.info('topics created', { topics: created });
    } finally {
      await admin.disconnect();
    }
    const publisher = await createPublisher(kafka);
    closers.push({ name: 'publisher', close: () => publisher.close() });
    const context: ServiceContext = { env, config, logger, metrics, redis, kafka, publisher };
    parts = await options.setup(context);
    const runners = parts.runners ?? [];
    health = await startHealthServer({
      port: config.metricsPort,
      registry: metrics,
      // Redis too: its commands wait while it is away, so a replica without it would hold its partitions idle.
      isReady: () =>
        !stopping &&
        redisWatch.isUp() &&
        runners.every((runner) => runner.isReady()) &&
        (parts.isReady?.() ?? true),
    });
    for (const runner of runners) await runner.start();
    await parts.start?.();
    logger.info('started', { metricsPort: health.port });
    let closing: Promise<boolean> | undefined;
    const healthServer = health;
    return {
      context,
      health: healthServer,
      failed: Promise.race([
        ...runners.map((runner) => runner.failed()),
        ...(parts.failed ? [parts.failed()] : []),
      ]),
      close() {
        closing ??= (async () => {
          stopping = true;
          return shutdown(logger, [
            ...runnerClosers(runners),
            ...(parts.closers ?? []),
            ...closers,
            { name: 'redis', close: () => closeRedis(redis).finally(() => redisWatch.close()) },
            { name: 'health', close: () => healthServer.close() },
          ]);
        })();
        return closing;
      },
    };
  } catch (error) {
    await shutdown(logger, [
      // Runners started before the failure (a later one's start, or `parts.start`) stop first, as on close.
      ...runnerClosers(parts.runners ?? []),
      ...(parts.closers ?? []),
      ...closers,
      { name: 'redis', close: () => closeRedis(redis).finally(() => redisWatch.close()) },
      ...(health ? [{ name: 'health', close: () => (health as HealthServer).close() }] : []),
    ]);
    throw error;
  }
}

/** The runners as closers: stopped first, each on its own. */
function runnerClosers(runners: readonly ConsumerRunner[]): Closer[] {
  return runners.map((runner, index) => ({ name: `runner-${index}`, close: () => runner.close() }));
}

/** Closes `closers` in order, each even if one before it failed; false when any failed. */
async function shutdown(logger: Logger, closers: Closer[]): Promise<boolean> {
  let clean = true;
  await closeAll(closers, (name, error) => {
    clean = false;
    logger.error('close failed', { resource: name, error });
  });
  return clean;
}

/**
 * A service's whole life, for `main.ts`: start, run until SIGTERM or SIGINT, stop gracefully within
 * the configured time, and set the exit code. Start-up failures (a bad variable, no broker) exit 1
 * with the reason; so do a runner or another part that stopped for good (`failed`, after a graceful
 * stop, so an orchestrator starts the service again) and a stop that could not close everything.
 */
export async function runService(options: ServiceOptions): Promise<void> {
  let service: RunningService;
  try {
    service = await startService(options);
  } catch (error) {
    process.stderr.write(
      `${JSON.stringify({ level: 'error', service: options.name, message: 'start failed', error: { name: (error as Error).name, code: (error as { code?: unknown }).code, message: (error as Error).message } })}\n`,
    );
    // Exit now: a half-built service may hold sockets or timers (a Kafka client mid-reconnect) that would
    // keep the process alive, and an orchestrator must see the failure to restart it.
    process.exit(1);
  }
  const { logger, config } = service.context;
  const stop = await Promise.race([
    untilShutdownSignal().then((signal) => ({ signal })),
    service.failed.then((error) => ({ error })),
  ]);
  if ('error' in stop) {
    logger.error('a consumer stopped for good, stopping to be started again', { error: stop.error });
    process.exitCode = 1;
  } else logger.info('stopping', { signal: stop.signal });
  const timer = setTimeout(() => {
    logger.error('graceful stop timed out, exiting', { shutdownTimeoutMs: config.shutdownTimeoutMs });
    process.exit(1);
  }, config.shutdownTimeoutMs);
  timer.unref();
  if (!(await service.close())) process.exitCode = 1;
  logger.info('stopped');
}

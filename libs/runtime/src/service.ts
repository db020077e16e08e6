import {
  bootstrapTopics,
  connectAdminThroughSeeds,
  createKafka,
  createPublisher,
  PUBLISHER_RETRY_MS,
  seedClients,
  seedsFrom,
  topicSpecs,
  type ConsumerRunner,
  type Publisher,
} from '@urs/bus';
import { serviceConfig } from '@urs/config';
import { createLogger, type Logger } from '@urs/logging';
import {
  UrsError,
  closeAll,
  isInfrastructureFault,
  retryThroughOutage,
  unlessAborted,
  type Closer,
} from '@urs/resilience';
import { closeRedis, createRedis } from '@urs/store';
import { Registry, startHealthServer, type HealthServer } from '@urs/telemetry';
import { untilRedisAnswers, watchRedis } from './redis-health';
import type {
  RunningService,
  ServiceBasics,
  ServiceContext,
  ServiceOptions,
  ServiceParts,
} from './service-types';
import { publisherOnceConnected, publisherPromise, startedUnlessStopped } from './start-waits';
import { stopTimes } from './stop-times';

/** startService's rejection when its `stop` was aborted before the start finished. */
export class ServiceStoppedError extends UrsError {
  /** Whether everything built before the stop closed without failing (each failure is logged). */
  readonly closedCleanly: boolean;

  constructor(closedCleanly: boolean, cause?: unknown) {
    super('SERVICE_STOPPED', 'the service was asked to stop while starting', { cause });
    this.closedCleanly = closedCleanly;
  }
}

/** Reads the service's config and own settings and makes its logger; throws on a bad or missing variable. */
export function serviceBasics<S>(options: ServiceOptions<S>): ServiceBasics<S> {
  const env = options.env ?? process.env;
  const config = serviceConfig(env, options.name, options.defaultMetricsPort);
  // Without a reader the service has no settings of its own: S is then its default, undefined.
  const settings = options.settings ? options.settings(env) : (undefined as S);
  return { env, config, settings, logger: createLogger({ service: options.name, level: config.logLevel }) };
}

/**
 * Starts the health endpoints, builds the shared clients, makes sure its topics exist, waits for Redis,
 * runs the service's setup and starts its runners. The order of close is the reverse of dependency: runners (stop
 * intake, finish in-flight work, commit), the service's own closers, the publisher, Redis, health.
 */
export async function startService<S = undefined>(options: ServiceOptions<S>): Promise<RunningService<S>> {
  return startWith(options, serviceBasics(options));
}

/** startService with its config, settings and logger already read. */
export async function startWith<S>(
  options: ServiceOptions<S>,
  basics: ServiceBasics<S>,
): Promise<RunningService<S>> {
  const { env, config, settings, logger } = basics;
  const times = stopTimes(config.shutdownTimeoutMs);
  const step = (name: string): void => options.onStep?.(name);
  const metrics = new Registry();
  const redis = createRedis(config.redis, { connectionName: config.kafka.clientId });
  // At once: the watch is the client's 'error' listener, and the client starts connecting now.
  const redisWatch = watchRedis(redis, { logger, metrics });
  const kafka = createKafka(config.kafka, logger);
  // Waiting for Kafka, each try connects once through each seed broker in turn: retryThroughOutage retries,
  // and gives up on a stop, while a KafkaJS connect's own retries (about a minute of them) cannot be stopped
  // and would outlive the close. A seed broker away does not fail the try while another answers.
  const kafkaSeeds = seedClients(config.kafka, logger);
  const closers: Closer[] = [];
  const stopping = new AbortController();
  // Until the runners start nothing is consumed, so the stop is passed on at once: setup may give up its
  // waits. From then on close() aborts `stopping`, after the runners stopped taking messages.
  const passOn = (): void => stopping.abort();
  const stop = options.stop;
  if (stop?.aborted) passOn();
  stop?.addEventListener('abort', passOn, { once: true });
  const throwIfStopped = (): void => {
    if (stop?.aborted) throw new ServiceStoppedError(true);
  };
  let parts: ServiceParts = {};
  let health: HealthServer | undefined;
  /** What the start does until setup returned, for /readyz: Kafka's topics, the wait for Redis, setup. */
  let starting: 'kafka' | 'redis' | 'setup' | undefined = 'kafka';
  const waitForKafka = options.waitForKafka === true;
  // Whether the topics exist and the publisher is connected: from the start, unless waitForKafka.
  let kafkaConnected = false;
  /** Whether a step of the start that needs Kafka failed on its absence and waits to be tried again. */
  let kafkaAway = false;
  /** Tries `attempt` again while it fails on what may heal by waiting (Kafka away), until `signal`. */
  const throughOutage = <T>(what: string, signal: AbortSignal, attempt: () => Promise<T>): Promise<T> =>
    retryThroughOutage(attempt, {
      what,
      log: logger,
      signal,
      shouldRetry: (error) => !signal.aborted && isInfrastructureFault(error),
      onOutage: (down) => (kafkaAway = down),
    });
  /** The steps of the start that need Kafka: its topics made, the publisher connected. */
  const connectKafka = async (): Promise<Publisher> => {
    step('topics');
    // Waiting for Kafka, through the first seed broker that answers (its index in KAFKA_BROKERS).
    const { admin, seed } = waitForKafka
      ? await connectAdminThroughSeeds(kafkaSeeds, stopping.signal)
      : { admin: kafka.admin(), seed: 0 };
    try {
      // Inside: a connect that failed is disconnected too.
      if (!waitForKafka) await admin.connect();
      const layout = config.topicLayout;
      const specs = topicSpecs(config.topics, layout.partitions, options.topics);
      const created = await bootstrapTopics(admin, specs, {
        logger,
        replicationFactor: layout.replicationFactor,
      });
      if (created.length > 0) logger.info('topics created', { topics: created });
    } finally {
      await admin.disconnect();
    }
    throwIfStopped();
    step('publisher');
    // The publisher tries a send again for ~14 s (PUBLISHER_RETRY_MS), not the ~64 s of `kafka`'s retries: its
    // callers retry on their own, and must see the fault soon (held messages, /readyz, a REST write's 503 within
    // a proxy's timeout). Its client retries nothing itself, so its connect is one try and a close ends its
    // sends' tries at once: KafkaJS's own retries cannot be stopped. It connects through the seed broker that
    // just answered: KafkaJS moves on to the next seed only after some failures (a refused connection, not a
    // closed one).
    const brokers = seedsFrom(config.kafka.brokers, seed);
    const publisherKafka = createKafka({ ...config.kafka, brokers }, logger, { retries: 0 });
    const publisher = await createPublisher(publisherKafka, { retryForMs: PUBLISHER_RETRY_MS });
    // A stop during the connect, which the wait for Kafka gave up on meanwhile: what it connected is closed.
    if (stopping.signal.aborted) {
      await publisher.close();
      throw new ServiceStoppedError(true);
    }
    closers.push({ name: 'publisher', close: () => publisher.close() });
    kafkaConnected = true;
    return publisher;
  };
  const connected = publisherPromise();
  // Rejected only when the start ends without Kafka; a send waiting on it is what sees that.
  connected.promise.catch(() => undefined);
  let runners: ConsumerRunner[] = [];
  // Filled once setup returned: until then /readyz/<part> answers 404 (not ready, to a probe).
  const partChecks: Record<string, () => string | undefined> = {};
  const sharedNotReadyReason = (): string | undefined => {
    if (stopping.signal.aborted) return 'stopping';
    // Before setup returned: what the start waits for.
    if (starting === 'kafka') return 'starting: waiting for Kafka (KAFKA_BROKERS) to answer';
    if (starting !== undefined && !redisWatch.isUp())
      return 'starting: waiting for Redis (REDIS_URL) to answer';
    if (starting !== undefined) return 'starting: setting up';
    if (!kafkaConnected) return 'waiting for Kafka (KAFKA_BROKERS) to answer';
    // Redis too: its commands wait while it is away, so a replica without it would hold its partitions idle.
    if (!redisWatch.isUp()) return 'Redis (REDIS_URL) does not answer';
    return undefined;
  };
  const notReadyReason = (): string | undefined => {
    const shared = sharedNotReadyReason();
    if (shared !== undefined) return shared;
    // A runner, or `start`, that Kafka failed again since it answered (not a part's: the REST API answers on).
    if (kafkaAway) return 'waiting for Kafka (KAFKA_BROKERS) to answer';
    if (!runners.every((runner) => runner.isReady()))
      return 'a consumer has not joined its group, lost its broker, or holds messages on a fault';
    if (!(parts.isReady?.() ?? true)) return parts.notReadyReason?.() ?? 'starting';
    return undefined;
  };
  try {
    throwIfStopped();
    // First, so that the process answers /healthz and /metrics (urs_ready 0, urs_redis_up) while the start
    // waits, for Kafka's topics or for Redis: an orchestrator's liveness probe does not kill it meanwhile,
    // and the alerts on those metrics can fire.
    step('health');
    const healthServer = await startHealthServer({
      port: config.metricsPort,
      registry: metrics,
      isReady: () => notReadyReason() === undefined,
      notReadyReason,
      parts: partChecks,
    });
    health = healthServer;
    throwIfStopped();
    const publisher = waitForKafka ? publisherOnceConnected(connected.promise) : await connectKafka();
    const context: ServiceContext<S> = {
      env,
      config,
      settings,
      logger,
      metrics,
      redis,
      kafka,
      publisher,
      kafkaConnected: () => kafkaConnected,
      stopping: stopping.signal,
      drainTimeoutMs: times.drainTimeoutMs,
    };
    throwIfStopped();
    // Setup reads Redis (a key check, the shared call limiter) and its commands wait while Redis is away,
    // uninterruptibly: the start waits here instead, where a stop ends the wait at once.
    starting = 'redis';
    step('redis');
    if (!(await untilRedisAnswers(redis, { logger, signal: stopping.signal }))) {
      throw new ServiceStoppedError(true);
    }
    throwIfStopped();
    starting = 'setup';
    step('setup');
    // A stop gives setup up at once: Redis may be lost again after the wait above, and setup's commands
    // (and the shared limiter's connect) then wait for it where no stop reaches them. What setup still
    // waits on fails once the close below has closed Redis; parts it returns after all are closed then.
    const setup = options.setup(context);
    parts = await unlessAborted(setup, stopping.signal).catch((error: unknown) => {
      if (stopping.signal.aborted) void closeAbandoned(logger, setup);
      throw error;
    });
    // A stop as setup returned ends the start here, before anything consumes.
    throwIfStopped();
    // Waiting for Kafka, the stop is passed on until the wait is over (below).
    if (!waitForKafka) stop?.removeEventListener('abort', passOn);
    runners = parts.runners ?? [];
    for (const [name, reason] of Object.entries(parts.partReadiness ?? {}))
      partChecks[name] = () => sharedNotReadyReason() ?? reason();
    starting = undefined;
    if (parts.serve) {
      step('serve');
      await parts.serve();
    }
    if (waitForKafka) {
      // Until the runners start nothing is consumed: a stop (passed on to `stopping`) ends the wait at once.
      const reached = await throughOutage('reaching Kafka to start', stopping.signal, connectKafka).catch(
        (error: unknown) => {
          // Sends waiting on the placeholder (a REST write) fail rather than hang through the close.
          connected.reject(error);
          throwIfStopped();
          throw error;
        },
      );
      connected.resolve(reached);
      throwIfStopped();
    }
    stop?.removeEventListener('abort', passOn);
    // Waiting for Kafka, a runner's start or `start` that fails on Kafka gone again since it answered is tried
    // again too, /readyz 503 `waiting for Kafka` meanwhile; a stop gives it up (and the start), with the runners
    // started closed first, as on close.
    const withKafka = (what: string, start: () => Promise<void>): Promise<void> =>
      waitForKafka ? throughOutage(what, stop ?? new AbortController().signal, start) : start();
    for (const [index, runner] of runners.entries()) {
      step(`start runner-${index}`);
      await withKafka(`start runner-${index}`, () => runner.start());
    }
    step('start');
    if (parts.start) await withKafka('start', async () => parts.start?.());
    if (parts.started) {
      step('started');
      if (!(await startedUnlessStopped(parts.started(), stop))) throw new ServiceStoppedError(true);
    }
    step('running');
    logger.info('started', { metricsPort: healthServer.port });
    let closing: Promise<boolean> | undefined;
    return {
      context,
      health: healthServer,
      failed: Promise.race([
        ...runners.map((runner) => runner.failed()),
        ...(parts.failed ? [parts.failed()] : []),
      ]),
      close() {
        closing ??= stopAll(
          logger,
          stopping,
          runners,
          [
            ...(parts.closers ?? []),
            ...closers,
            {
              name: 'redis',
              close: () => closeRedis(redis, times.redisQuitTimeoutMs).finally(() => redisWatch.close()),
            },
            { name: 'health', close: () => healthServer.close() },
          ],
          step,
        );
        return closing;
      },
    };
  } catch (error) {
    stop?.removeEventListener('abort', passOn);
    // Runners started before the failure (a later one's start, or `parts.start`) stop first, as on close.
    const clean = await stopAll(
      logger,
      stopping,
      parts.runners ?? [],
      [
        ...(parts.closers ?? []),
        ...closers,
        {
          name: 'redis',
          close: () => closeRedis(redis, times.redisQuitTimeoutMs).finally(() => redisWatch.close()),
        },
        ...(health ? [{ name: 'health', close: () => (health as HealthServer).close() }] : []),
      ],
      step,
    );
    // Whatever failed once the stop was asked for (a setup giving up on `stopping`) is the stop's doing.
    if (stop?.aborted) {
      throw new ServiceStoppedError(clean, error instanceof ServiceStoppedError ? undefined : error);
    }
    throw error;
  }
}

/**
 * Stops the service: every runner stops taking messages at once (the synchronous start of its close),
 * then `stopping` is aborted, then the runners finish and everything else closes in order. In this order
 * a handler that `stopping` interrupts fails while its runner is stopping, which leaves its message
 * unfinished for the next owner rather than counting the failure as a retry. The runners close side by
 * side; each is waited for in turn. False when anything failed to close.
 */
function stopAll(
  logger: Logger,
  stopping: AbortController,
  runners: readonly ConsumerRunner[],
  closers: Closer[],
  step: (name: string) => void,
): Promise<boolean> {
  const runnerClosers = runners.map((runner, index): Closer => {
    const closed = runner.close();
    // Waited for below, in turn: not an unhandled rejection while an earlier runner is still closing.
    closed.catch(() => undefined);
    return { name: `runner-${index}`, close: () => closed };
  });
  stopping.abort();
  return shutdown(logger, [...runnerClosers, ...closers], step);
}

/**
 * The parts of a setup the start gave up on, closed once it returns them after all (its runners never
 * started, so they only close): a shared limiter's own Redis connection would otherwise stay open in a
 * process that goes on, a test's or an embedding one's. A setup that fails has nothing to close.
 */
async function closeAbandoned(logger: Logger, setup: Promise<ServiceParts>): Promise<void> {
  const parts = await setup.catch(() => undefined);
  if (!parts) return;
  logger.info('setup returned after the start gave it up: closing its parts');
  await stopAll(
    logger,
    new AbortController(),
    parts.runners ?? [],
    [...(parts.closers ?? [])],
    () => undefined,
  );
}

/** Closes `closers` in order, each even if one before it failed; false when any failed. */
async function shutdown(logger: Logger, closers: Closer[], step: (name: string) => void): Promise<boolean> {
  let clean = true;
  await closeAll(
    closers.map((closer) => ({
      name: closer.name,
      close: () => {
        step(`close ${closer.name}`);
        return closer.close();
      },
    })),
    (name, error) => {
      clean = false;
      logger.error('close failed', { resource: name, error });
    },
  );
  return clean;
}

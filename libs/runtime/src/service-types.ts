// The shapes of a service's start (see service.ts): what its setup gets and builds, its options, and the
// running service startService gives back.
import type Redis from 'ioredis';
import type { Kafka } from 'kafkajs';
import type { ConsumerRunner, Publisher, StageTopics } from '@urs/bus';
import type { Env, ServiceConfig } from '@urs/config';
import type { Logger } from '@urs/logging';
import type { Closer } from '@urs/resilience';
import type { HealthServer, Registry } from '@urs/telemetry';

/** What every service gets before its own parts are built. `S`: its own settings (ServiceOptions.settings). */
export interface ServiceContext<S = undefined> {
  env: Env;
  config: ServiceConfig;
  /** What ServiceOptions.settings read, before anything connected. */
  settings: S;
  logger: Logger;
  metrics: Registry;
  redis: Redis;
  kafka: Kafka;
  /** With ServiceOptions.waitForKafka, its sends wait until Kafka answered (see `kafkaConnected`). */
  publisher: Publisher;
  /** Whether the topics are made and the publisher connected: from the start, unless waitForKafka. */
  kafkaConnected: () => boolean;
  /**
   * Aborted when the service begins to stop, for what should give up then (calls in flight, waits): during
   * setup when the stop comes then (see ServiceOptions.stop), otherwise when close() begins, once every
   * runner has stopped taking messages. A handler it interrupts therefore fails while its runner is
   * stopping, which leaves the message uncommitted for the next owner: neither retried nor dead-lettered.
   * Services use it rather than listening to the process's signals themselves.
   */
  stopping: AbortSignal;
  /**
   * How long each runner's messages in flight may take to finish when the service stops, ms: a third of
   * URS_SHUTDOWN_TIMEOUT_MS (see stopTimes), so that the drain, the wait after aborting it and the rest of
   * the close fit in the shutdown timeout. Give it to every runner as its `drainTimeoutMs`.
   */
  drainTimeoutMs: number;
}

/** What a service's setup built. Runners are started by the runtime, and closed first on stop. */
export interface ServiceParts {
  runners?: ConsumerRunner[];
  /**
   * Called once the health endpoints answer, before Kafka is waited for (ServiceOptions.waitForKafka): what
   * must answer while Kafka is away (the registrar's REST API). Called once.
   */
  serve?: () => Promise<void>;
  /**
   * Started after the runners, so with Kafka connected (e.g. a scheduler, a sweep); called once, or again after
   * it failed on Kafka away (see ServiceOptions.waitForKafka).
   */
  start?: () => Promise<void>;
  /** Closed after the runners and before the shared clients, in this order. */
  closers?: Closer[];
  /** Extra readiness beyond "every runner joined its group". */
  isReady?: () => boolean;
  /** Why `isReady` says false, for /readyz's answer (see HealthServerOptions.notReadyReason). */
  notReadyReason?: () => string | undefined;
  /**
   * Readiness of a part of the service that answers on its own, at `/readyz/<name>`: why the part is not
   * ready (undefined: ready). It is not ready either while the service stops, before Kafka answered once, or
   * while Redis does not answer; the runners' state does not count (see HealthServerOptions.parts).
   */
  partReadiness?: Readonly<Record<string, () => string | undefined>>;
  /**
   * Resolves once the service has done what it must before it counts as started (the registrar's first
   * rebuild of Redis from Kafka), awaited after `start`; its rejection fails the start (exit 1). A stop
   * meanwhile gives the start up, as during setup. Default: started once `start` returned.
   */
  started?: () => Promise<void>;
  /**
   * Resolves when a part of the service other than its runners stopped working for good (e.g. a consumer
   * of its own that Kafka stopped): the service then stops to be started again, as for a runner.
   */
  failed?: () => Promise<Error>;
}

export interface ServiceOptions<S = undefined> {
  /** The service name, as in logs and metrics. */
  name: string;
  /**
   * /healthz, /readyz and /metrics port unless URS_METRICS_PORT says otherwise. Default: the stage's own
   * (`DEFAULT_METRICS_PORTS` in @urs/config), 0 (a free port) for other names.
   */
  defaultMetricsPort?: number;
  env?: Env;
  /**
   * The topics the service reads or writes, its dead-letter topic included (a stage's `topics.ts`): only these
   * are made at start (those missing) and described, so that a cluster's ACLs may allow each stage its own
   * topics alone. Default: every topic of the pipeline.
   */
  topics?: StageTopics;
  /**
   * Reads the service's own settings (its `config.ts`) from the env. Called with the shared config before
   * any client is made, so a bad or missing variable fails the start at once, naming it, rather than
   * after Kafka and Redis answered (or never, while the brokers are unreachable). Its result is
   * `context.settings`; setup reads no variable of its own.
   */
  settings?: (env: Env) => S;
  /**
   * Builds the service's parts. Called once Redis answered (the start waits for it, interruptibly, with the
   * health endpoints answering: /readyz 503 `starting: waiting for Redis (REDIS_URL) to answer`), so that
   * its reads of Redis (a key check, the shared call limiter) do not hold the start where a stop cannot end it.
   * Should Redis be lost again while it runs, a stop still ends the start at once (see `stop`).
   */
  setup: (context: ServiceContext<S>) => Promise<ServiceParts>;
  /**
   * Whether the start waits for Kafka when it does not answer, instead of failing after KafkaJS's retries
   * (~1 min, exit 1). Then setup runs first (its `publisher`'s sends wait until Kafka answered), /readyz
   * answers 503 `waiting for Kafka` from then on, `serve` is called, and only then are the
   * topics made and the publisher and the runners connected, tried again with capped backoff (one warning per
   * outage) for as long as Kafka's failures may heal; a stop meanwhile exits 0, and the placeholder
   * publisher's sends then fail. `start` and `started` come after the runners, as without it. Each runner's
   * start and `start` are tried again likewise when Kafka fails them (lost again since it answered), /readyz
   * 503 `waiting for Kafka` meanwhile: what `start` does before it fails must bear being done again. Default
   * false.
   */
  waitForKafka?: boolean;
  /**
   * Asks the service to stop (runService aborts it on SIGTERM or SIGINT, from before the start). Before
   * the runners start it aborts `context.stopping` at once, and the start is given up as soon as the step
   * under way (the topics) returns, at once during the wait for Redis and during setup (setup is left
   * unfinished: its Redis commands wait where no stop reaches them while Redis is lost again, and fail once
   * Redis is closed): what the runtime built is closed and startService rejects with a ServiceStoppedError.
   * Once the runners start, stopping is close()'s: call it (runService does); until then, with waitForKafka, a
   * stop also gives up a runner's start or `start` tried again (the runners started are closed first).
   */
  stop?: AbortSignal;
  /**
   * Told each step of the start and of the close as it begins (`setup`, `start runner-0`,
   * `close runner-0`, `close redis`, ...): runService names the last one when the graceful stop times out.
   */
  onStep?: (step: string) => void;
}

export interface RunningService<S = undefined> {
  context: ServiceContext<S>;
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
 * What a service reads before anything is built: every variable it reads, shared and its own. runService
 * reads it first, to fail a bad start at once and to log and time a stop.
 */
export interface ServiceBasics<S = undefined> {
  env: Env;
  config: ServiceConfig;
  settings: S;
  logger: Logger;
}

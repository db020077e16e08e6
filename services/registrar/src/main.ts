import { createConsumerRunner } from '@urs/bus';
import { createCallMetrics, createHttpsAgent, createSharedLimiter, quotaGateFor } from '@urs/defender';
import { runService } from '@urs/runtime';
import { sleep } from '@urs/resilience';
import { createSecretSealer } from '@urs/secrets';
import {
  createKeyFingerprintStore,
  createPollScheduleStore,
  createRegistrarStateStore,
  scoreStoreFor,
  createTenantStore,
} from '@urs/store';
import { createAccessChecker } from './access';
import { registrarConfig } from './config';
import { redactPushPayload } from './dead-letter';
import { createDirectorSide } from './director-side';
import { deviceRoutes } from './http/devices';
import { rebuiltGate } from './http/rebuilt';
import { startApiServer, type ApiServer } from './http/server';
import { tenantRoutes } from './http/tenants';
import { createSecretResealer } from './reseal';
import { stageTopics } from './topics';

void runService({
  name: 'registrar',
  topics: stageTopics,
  settings: registrarConfig,
  // Kafka away at start: the process still starts, /readyz says it waits for Kafka and the REST API answers
  // 503 at once, instead of exiting 1 after a minute and being restarted in a loop.
  waitForKafka: true,
  async setup(context) {
    const { settings, config, logger, metrics, redis, kafka, publisher, stopping, drainTimeoutMs } = context;
    const prefix = config.redis.keyPrefix;
    const tenants = createTenantStore(redis, prefix);
    const state = createRegistrarStateStore(redis, prefix);
    const sealer = createSecretSealer(settings.secretKeys);
    // The registrar opens stored secrets (an unchanged push is told by its secret, a kept one is re-sealed,
    // the access test) and seals new ones every other stage must open: with another URS_SECRET_KEY under the
    // same URS_SECRET_KEY_ID it would take every push for a change and re-seal each secret with a key no
    // poller or vuln-fetcher holds. Checked once Redis was rebuilt from urs.tenants (`ready`, awaited by the
    // start (`started`), the pushes and the REST writes): before then, after a wipe, there is nothing to check
    // against.
    const keyIds = new Set(settings.secretKeys.keys.keys());
    const fingerprints = createKeyFingerprintStore(redis, prefix);
    const { registry, rebuilder, ready, isRebuilt, activeKeyProven, catchUp, readSettled, handler } =
      createDirectorSide({
        kafka,
        publisher,
        tenants,
        state,
        sealer,
        keyIds,
        fingerprints,
        schedules: createPollScheduleStore(redis, prefix),
        topics: config.topics,
        groupId: settings.groupId,
        logger,
        metrics,
        signal: stopping,
      });

    // The access check shares the pipeline's call slots and the tenant's quota with the pollers and fetchers.
    const limiter = await createSharedLimiter({
      redis,
      keyPrefix: prefix,
      maxConcurrent: settings.maxInFlight,
      metrics,
      logger,
    });
    // The Defender calls' series from the start (held-back at 0 per endpoint), not from the first client made.
    createCallMetrics(metrics);
    const quota = quotaGateFor(settings.quotas, redis, prefix);
    const httpsAgent = createHttpsAgent(settings.extraCa ? { extraCa: settings.extraCa } : {});
    const checkAccess = createAccessChecker({
      limiter,
      quota,
      logger,
      overrides: settings.defender,
      httpsAgent,
      metrics,
      requestTimeoutMs: settings.requestTimeoutMs,
      tokenRequestTimeoutMs: settings.tokenRequestTimeoutMs,
    });

    const runner = createConsumerRunner({
      kafka,
      service: 'registrar',
      groupId: settings.groupId,
      subscriptions: [
        {
          topic: config.topics.registration,
          contract: 'urs/registration-push',
          // A push that fails as a whole is dead-lettered from its bytes, which carry secrets in clear.
          redactPayload: redactPushPayload,
          handler,
        },
      ],
      publisher,
      dlqTopic: config.topics.dlq,
      logger,
      metrics,
      drainTimeoutMs,
    });

    // Moves the secrets stored under a retired key onto the active one, a batch per pass, from the first
    // rebuild on (see createSecretResealer).
    const resealer = createSecretResealer({
      tenants,
      registry,
      sealer,
      keyIds,
      ready,
      activeKeyProven,
      metrics,
      logger,
      batch: settings.resealBatch,
    });
    const resealStop = new AbortController();
    const resealStopped = new Promise<void>((resolve) =>
      resealStop.signal.addEventListener('abort', () => resolve(), { once: true }),
    );
    let resealing: Promise<void> | undefined;

    const watch = new AbortController();
    let watching: Promise<void> | undefined;
    let api: ApiServer | undefined;
    let rebuiltOnce!: () => void;
    const firstRebuild = new Promise<void>((resolve) => (rebuiltOnce = resolve));
    // The first rebuild reads urs.tenants with clients of its own, so it may be done before the publisher is
    // connected: a write waits for both, or it would be held until Kafka answered the publisher.
    const ensureRebuilt = rebuiltGate(() => isRebuilt() && context.kafkaConnected(), ready);
    // Ready once the REST port listens and Redis was rebuilt from urs.tenants (and the key checked against
    // it). Without this, a client waiting on /readyz could call the API and be refused, or be answered 503
    // until the rebuild.
    const apiNotReadyReason = (): string | undefined => {
      if (api === undefined) return 'starting: the REST port is not open yet';
      if (!isRebuilt())
        return 'waiting for Kafka: the tenants are not rebuilt into Redis from urs.tenants yet';
      return undefined;
    };
    return {
      runners: [runner],
      // /readyz: the API, and the Director consumer joined (the runtime's part).
      isReady: () => apiNotReadyReason() === undefined,
      notReadyReason: apiNotReadyReason,
      // /readyz/api: the API alone, for the Service in front of it. Once the tenants were rebuilt it answers
      // from Redis whatever Kafka does later (a write Kafka cannot take is answered 503), so a consumer
      // waiting for the broker must not take it out of rotation: its clients would get connection errors.
      partReadiness: { api: apiNotReadyReason },
      // A rebuild that failed for good (its consumer stopped by Kafka for what waiting does not mend, see
      // crashHeals; an outage only fails it retryably) leaves a registrar that can no longer
      // refill a wiped Redis: it stops to be started again, like a runner that stopped consuming.
      failed: () => rebuilder.failed(),
      // Started once rebuilt, and the key checked against what was rebuilt: a refused key fails the start
      // (exit 1). Kafka away only makes it wait, retried by the watch.
      started: () =>
        Promise.race([
          firstRebuild,
          rebuilder.failed().then((error) => {
            throw error;
          }),
        ]),
      // The REST API answers while Kafka is away (503 NOT_READY until the first rebuild).
      async serve() {
        api = await startApiServer({
          port: settings.httpPort,
          routes: [
            ...tenantRoutes({
              registry,
              tenants,
              sealer,
              checkAccess,
              ensureRebuilt,
              accessTestTimeoutMs: settings.accessTestTimeoutMs,
            }),
            ...deviceRoutes({
              tenants,
              ensureRebuilt,
              scores: scoreStoreFor(redis, config.redis),
            }),
          ],
          tokens: settings.apiTokens,
          maxBodyBytes: settings.maxBodyBytes,
          logger,
          metrics,
          // Requests in flight (an access test waits on Microsoft up to URS_ACCESS_TEST_TIMEOUT_MS) get the
          // runners' share of the stop, then are answered 503, and their handlers as long again to settle (a
          // write under way finishes before the publisher and Redis close): the stop keeps to
          // URS_SHUTDOWN_TIMEOUT_MS.
          drainTimeoutMs,
        });
        logger.info('REST listening', { httpPort: api.port });
        // The REST server stops taking requests soon after the stop begins, while the runners drain, rather
        // than when its closer's turn comes: its drain then runs beside theirs, within the same budget. Not at
        // once: /readyz answers 503 from the stop's first instant, and a load balancer that saw it ready a
        // moment before must find the port still open (it is then answered 503 once the server stops).
        const server = api;
        const graceMs = Math.min(1_000, Math.floor(drainTimeoutMs / 4));
        stopping.addEventListener('abort', () => void sleep(graceMs).then(() => server.close()), {
          once: true,
        });
        // The first rebuild, then a check every URS_REBUILD_CHECK_MS: each tried again through an outage.
        // Each, once ready, catches Redis up with urs.tenants (see DirectorSide.catchUp): the first reads the
        // topic (Redis rebuilt before: what a registrar killed after its send left behind), not waited for, so
        // that every one stores again what this registrar sent and Redis failed to take every URS_REBUILD_CHECK_MS.
        watching = rebuilder.watch(settings.rebuildCheckMs, watch.signal, async () => {
          await ready();
          rebuiltOnce();
          await catchUp();
        });
        resealing = Promise.race([firstRebuild, resealStopped]).then(() =>
          resealer.watch(settings.resealCheckMs, resealStop.signal),
        );
      },
      closers: [
        { name: 'http', close: () => api?.close() },
        {
          // A re-seal under way finishes its record (Kafka, then Redis) before the publisher and Redis close.
          name: 'reseal',
          close: async () => {
            resealStop.abort();
            await resealing;
          },
        },
        {
          name: 'rebuild-watch',
          close: async () => {
            watch.abort();
            await watching;
            // The read of urs.tenants a check started (cut by the stop) and its writes to Redis.
            await readSettled();
          },
        },
        { name: 'limiter', close: () => limiter.close() },
        { name: 'https-agent', close: () => httpsAgent.destroy() },
      ],
    };
  },
});

import { randomBytes } from 'node:crypto';
import { createConsumerRunner, deleteOwnGroup, lastOffsets, stopWaitingAfter, topicOffsets } from '@urs/bus';
import { createCallMetrics, createHttpsAgent, createSharedLimiter, quotaGateFor } from '@urs/defender';
import { runService } from '@urs/runtime';
import { checkSecretKey, createReplicaKeyCheck, createSecretSealer } from '@urs/secrets';
import {
  createCycleStore,
  createDeadLetterLedger,
  createPollScheduleStore,
  createKeyFingerprintStore,
  createTenantStore,
} from '@urs/store';
import { createBatchFit } from './batch-fit';
import { readBatchFloor } from './batch-floor';
import { pollerConfig, warnOfShortIntervalUnit } from './config';
import { runCycle, type CycleDeps } from './cycle';
import { createDefenderGateway } from './defender';
import { createScheduler } from './scheduler';
import { schedulerCloser } from './scheduler-closer';
import { createTenantTable } from './tenant-table';
import { stageTopics } from './topics';

void runService({
  name: 'poller',
  topics: stageTopics,
  settings: pollerConfig,
  // Kafka away at start: up and answering /readyz 503 (`waiting for Kafka`) until it answers, then reading
  // urs.tenants and polling, instead of exiting 1 after KafkaJS's retries and restarting in a loop.
  waitForKafka: true,
  async setup({ settings, config, logger, metrics, redis, kafka, publisher, stopping, drainTimeoutMs }) {
    const prefix = config.redis.keyPrefix;
    // Unique per process even when two replicas share a pid (containers): leases and the group depend on it.
    const holderId = `${settings.instanceId}-${randomBytes(4).toString('hex')}`;
    const sealer = createSecretSealer(settings.secretKeys);
    const tenants = createTenantStore(redis, prefix);
    // A replica with the wrong key stays out (the start fails naming URS_SECRET_KEY) instead of failing
    // every tenant's cycle while it reports ready.
    const keyIds = new Set(settings.secretKeys.keys.keys());
    // Rolled out first with a new key, they write its fingerprint: the registrar re-seals with it once it matches.
    const fingerprints = createKeyFingerprintStore(redis, prefix);
    await checkSecretKey({ sealer, tenants, keyIds, logger, fingerprints, claimNewKeys: true });
    const limiter = await createSharedLimiter({
      redis,
      keyPrefix: prefix,
      maxConcurrent: settings.maxInFlight,
      metrics,
      logger,
    });
    // The Defender calls' series from the start (held-back at 0 per endpoint), not from the first client made.
    createCallMetrics(metrics);
    const httpsAgent = createHttpsAgent(settings.extraCa ? { extraCa: settings.extraCa } : {});
    const defender = createDefenderGateway({
      limiter,
      quota: quotaGateFor(settings.quotas, redis, prefix),
      logger,
      overrides: settings.defender,
      httpsAgent,
      metrics,
      requestTimeoutMs: settings.requestTimeoutMs,
      tokenRequestTimeoutMs: settings.tokenRequestTimeoutMs,
      maxQuotaWaitMs: settings.maxQuotaWaitMs,
      pageSize: settings.pageSize,
    });
    const cycles = createCycleStore(redis, prefix);
    const batchFit = createBatchFit();
    // Every replica reads every tenant: a consumer group of its own, from the beginning of the compacted topic.
    const table = createTenantTable();
    const cycleDeps: CycleDeps = {
      defender,
      sealer,
      // A secret this key does not open: the tenant's bad record when the key opens other tenants' secrets.
      replicaKey: createReplicaKeyCheck({ sealer, secrets: tenants, keyIds, fingerprints }),
      publisher,
      cycles,
      deviceBatchesTopic: config.topics.deviceBatches,
      batchFit,
      batchSize: settings.batchSize,
      maxCycleMs: settings.maxCycleMs,
      // Tenants registered with one Entra app share its quota: each plans its vulnerability mode with its share.
      quotaSharers: (record) => table.quotaSharers(record),
      logger,
    };

    // A tenant deleted or disabled: its client, its token and its secret go at once. A changed record gets a
    // new client at its next cycle (the gateway keeps one per revision).
    table.onChange((tenantId, record) => {
      if (record === null || !record.enabled) defender.forget(tenantId);
    });
    const groupId = `${settings.groupPrefix}.${holderId}`;
    const runner = createConsumerRunner({
      kafka,
      service: 'poller',
      groupId,
      // Read from the beginning at every start: nothing to commit, and a killed poller's group (which its
      // close would have deleted) then leaves no offsets behind to keep it for the offsets' retention.
      commitOffsets: false,
      subscriptions: [table.subscription(config.topics.tenants)],
      publisher,
      dlqTopic: config.topics.dlq,
      // Every start of every replica meets an invalid record again: its dead letter is written once.
      deadLetters: createDeadLetterLedger(redis, prefix),
      logger,
      metrics,
      partitionsConsumedConcurrently: 6,
      drainTimeoutMs,
    });

    const scheduler = createScheduler({
      table,
      schedules: createPollScheduleStore(redis, prefix),
      tenants,
      cycles,
      runCycle: (input) => runCycle(cycleDeps, input),
      holderId,
      intervalUnitMs: settings.intervalUnitMs,
      leaseMs: settings.leaseMs,
      maxConcurrentCycles: settings.maxConcurrentCycles,
      tickMs: settings.tickMs,
      recheckMs: settings.recheckMs,
      maxBackoffMs: settings.maxBackoffMs,
      logger,
      metrics,
    });
    logger.info('poller configured', {
      holderId,
      leaseMs: settings.leaseMs,
      intervalUnitMs: settings.intervalUnitMs,
    });
    warnOfShortIntervalUnit(settings, logger);

    let cancelCatchUpTimeout = (): void => undefined;
    // From the stop's first instant, while the consumer of urs.tenants still leaves its group: a poller begins
    // no cycle once stopping. A third to finish and a third to return once aborted, as a runner's batches get
    // (stopTimes): the last third closes the rest.
    const closeScheduler = schedulerCloser(scheduler, stopping, drainTimeoutMs, () => cancelCatchUpTimeout());
    return {
      runners: [runner],
      // Once Kafka answered and the consumer of urs.tenants started: where the topic ends now is what the
      // table must read before the scheduler polls (what was read before counts, see expectEnd).
      async start() {
        // Right after the topic was created its leaders may not answer yet (KRaft): retried while it settles.
        const offsets = await topicOffsets(kafka, config.topics.tenants, { logger });
        table.expectEnd(lastOffsets(offsets));
        // Before the first cycle: the last batches the topic's own limit surely takes keep their cycle's totals
        // from the replica's first cycles on (0, none until one as large was taken, when it cannot be read).
        batchFit.takesUpTo(await readBatchFloor(kafka, config.topics.deviceBatches, logger));
        scheduler.start();
        cancelCatchUpTimeout = stopWaitingAfter(table, settings.catchUpTimeoutMs, (behind) =>
          logger.warn('urs.tenants not read to its end in time; polling anyway', {
            partitionsBehind: behind,
          }),
        );
      },
      isReady: () => table.caughtUp(),
      closers: [
        closeScheduler,
        {
          // The group is this process's alone; leaving it behind would only clutter the cluster.
          name: 'tenants-group',
          close: () => deleteOwnGroup(kafka, groupId, runner),
        },
        { name: 'defender-clients', close: async () => defender.close() },
        { name: 'limiter', close: () => limiter.close() },
        { name: 'https-agent', close: () => httpsAgent.destroy() },
      ],
    };
  },
});

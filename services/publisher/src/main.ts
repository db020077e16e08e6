import { createConsumerRunner } from '@urs/bus';
import { runService } from '@urs/runtime';
import {
  createCycleStore,
  createDeadLetterLedger,
  createPublishedStore,
  createTenantStore,
  recordLostBatches,
  scoreStoreFor,
} from '@urs/store';
import { createCycleCompletion } from './completion';
import { publisherConfig } from './config';
import { createDeadlineSweep } from './deadline-sweep';
import { createPublishHandler } from './handler';
import { createInOrder } from './in-order';
import { tenantLeasing } from './lease';
import { createPublishedRebuilder, vmsKeysReader } from './rebuild';
import { createTenantsHandler } from './tenants';
import { createTombstones } from './tombstones';
import { stageTopics } from './topics';

/** Scored batches of a partition accepted and not yet published (ordering 'key'); one is ~0.7 MB. */
const SCORE_BATCHES_BUFFERED = 20;

void runService({
  name: 'publisher',
  topics: stageTopics,
  settings: publisherConfig,
  // Kafka away at start: up and answering /readyz 503 (`waiting for Kafka`) until it answers, then consuming,
  // instead of exiting 1 after KafkaJS's retries and restarting in a loop behind the orchestrator's backoff.
  waitForKafka: true,
  async setup({ settings: own, config, logger, metrics, redis, kafka, publisher, drainTimeoutMs }) {
    const prefix = config.redis.keyPrefix;
    const cycles = createCycleStore(redis, prefix);
    // A tenant whose record the registrar removed is deleted, as the scorer has it: after a wipe that took the
    // deletion's marker, its queued batches are dropped once the records are rebuilt, held until then.
    const published = createPublishedStore(redis, prefix, { onlyRegisteredTenants: true });
    const inOrder = createInOrder();
    const leasing = tenantLeasing();
    const scores = scoreStoreFor(redis, config.redis);
    const rebuild = createPublishedRebuilder({
      published,
      readKeys: vmsKeysReader(
        kafka,
        config.topics.vmsRiskScores,
        own.groupId,
        logger,
        own.rebuildReadTimeoutMs,
      ),
      logger,
    });
    const completion = createCycleCompletion({
      cycles,
      published,
      scores,
      publisher,
      topics: config.topics,
      logger,
      metrics,
      snapshotEveryCycles: own.snapshotEveryCycles,
      tombstoneAfterCycles: own.tombstoneAfterCycles,
      tombstoneHold: {
        maxSharePercent: own.tombstoneMaxSharePercent,
        minDevices: own.tombstoneHoldMinDevices,
        cycles: own.tombstoneHoldCycles,
      },
      inOrder,
      leasing,
      rebuild,
    });
    const runner = createConsumerRunner({
      kafka,
      service: 'publisher',
      groupId: own.groupId,
      sessionTimeoutMs: own.sessionTimeoutMs,
      partitionsConsumedConcurrently: own.partitionsConcurrency,
      // Batches ordered per tenant (the key), two at a time: the next one is decoded and validated while
      // the one before waits on Redis and Kafka (the handler still runs their effects one after the other),
      // and a tenant whose batch waits on retries does not hold up the tenants sharing its partition.
      ordering: 'key',
      maxBufferedPerPartition: SCORE_BATCHES_BUFFERED,
      drainTimeoutMs,
      subscriptions: [
        {
          topic: config.topics.deviceScores,
          contract: 'urs/score-batch',
          handler: createPublishHandler({
            cycles,
            published,
            completion,
            inOrder,
            leasing,
            publisher,
            topic: config.topics.vmsRiskScores,
            logger,
            metrics,
          }),
          // A scored batch dead-lettered: its cycle does not wait for it.
          deadLettering: recordLostBatches(cycles),
        },
        {
          // In this group, not one of the replica's own (as the scorer reads profiles): each tenant's
          // deletion goes to one replica, which tombstones the tenant's devices.
          topic: config.topics.tenants,
          contract: 'urs/tenant-record',
          tombstones: true,
          handler: createTenantsHandler({
            published,
            tenants: createTenantStore(redis, prefix),
            scores,
            tombstones: createTombstones({
              published,
              scores,
              publisher,
              topic: config.topics.vmsRiskScores,
              metrics,
            }),
            inOrder,
            leasing,
            rebuild,
            logger,
          }),
        },
      ],
      publisher,
      dlqTopic: config.topics.dlq,
      // An invalid record of urs.tenants the pollers and scorers dead-lettered is not dead-lettered again,
      // nor is a message redelivered after a crash before its offset was committed.
      deadLetters: createDeadLetterLedger(redis, prefix),
      logger,
      metrics,
    });
    const sweep = createDeadlineSweep({
      sweep: () => completion.closeOverdue(),
      everyMs: own.deadlineSweepMs,
      logger,
    });
    const watch = new AbortController();
    let watching: Promise<void> | undefined;
    return {
      runners: [runner],
      start: async () => {
        // The first check at once (a new install's costs one offset request), then every URS_REBUILD_CHECK_MS.
        watching = rebuild.watch(own.rebuildCheckMs, watch.signal);
        sweep.start();
      },
      closers: [
        {
          name: 'rebuild-watch',
          // A rebuild under way stops reading and gives its lock back: another replica takes it over at once.
          close: async () => {
            watch.abort();
            await watching;
            await rebuild.close();
          },
        },
        {
          name: 'deadline-sweep',
          // As long as Redis's QUIT is waited for (stopTimes): a sweep only hangs when Redis is away.
          close: () => sweep.close(Math.max(1, Math.min(2_000, Math.floor(drainTimeoutMs / 2)))),
        },
      ],
    };
  },
});

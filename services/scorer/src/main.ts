import { createConsumerRunner, deleteOwnGroup, lastOffsets, topicOffsets } from '@urs/bus';
import { runService } from '@urs/runtime';
import {
  createCycleStore,
  createDeadLetterLedger,
  createTenantStore,
  recordLostBatches,
  scoreStoreFor,
} from '@urs/store';
import { scorerConfig } from './config';
import { createScoreHandler } from './handler';
import {
  bindCatchUpTimeout,
  createProfileCache,
  heldWhileCatchingUp,
  registerProfileMetrics,
  tenantsSubscription,
} from './profiles';
import { stageTopics } from './topics';

/**
 * Enriched batches of a partition accepted and not yet scored (ordering 'key'): enough to keep every
 * tenant's two-batch window fed, few enough to bound memory (a 500-device batch is ~0.4 MB).
 */
const ENRICHED_BATCHES_BUFFERED = 20;

void runService({
  name: 'scorer',
  topics: stageTopics,
  settings: (env) => scorerConfig(env),
  // Kafka away at start: up and answering /readyz 503 (`waiting for Kafka`) until it answers, then consuming,
  // instead of exiting 1 after KafkaJS's retries and restarting in a loop behind the orchestrator's backoff.
  waitForKafka: true,
  async setup({ settings: own, config, logger, metrics, redis, kafka, publisher, drainTimeoutMs }) {
    const prefix = config.redis.keyPrefix;
    const profiles = createProfileCache({ tenants: createTenantStore(redis, prefix), logger });
    registerProfileMetrics(profiles, metrics);
    const common = {
      kafka,
      service: 'scorer',
      publisher,
      dlqTopic: config.topics.dlq,
      logger,
      metrics,
      sessionTimeoutMs: own.sessionTimeoutMs,
      drainTimeoutMs,
    };
    const profileRunner = createConsumerRunner({
      ...common,
      groupId: own.profilesGroupId,
      // Read from the beginning at every start, in a group of this process's own: nothing to commit, and
      // without offsets the group does not outlive the process by the offsets' retention.
      commitOffsets: false,
      // Every start of every replica meets an invalid record again: its dead letter is written once.
      deadLetters: createDeadLetterLedger(redis, prefix),
      subscriptions: [tenantsSubscription(config.topics.tenants, profiles)],
    });
    const scoreRunner = createConsumerRunner({
      ...common,
      groupId: own.groupId,
      partitionsConsumedConcurrently: own.partitionsConcurrency,
      // Batches are ordered per tenant (the key), not per partition: a tenant whose batch waits (its profile
      // not loadable yet, Redis retries) does not hold up the tenants sharing its partition. Two batches of a
      // tenant overlap, so one batch's Redis and Kafka round trips run while the next is scored: one tenant's
      // batches all share a partition, and handled one at a time they left the scorer waiting ~40 % of the
      // time. Safe because scores are stored newest-cycle-wins and the publisher never republishes an older
      // cycle's score over a newer one, whatever order the scored batches arrive in.
      ordering: 'key',
      maxBufferedPerPartition: ENRICHED_BATCHES_BUFFERED,
      subscriptions: [
        {
          topic: config.topics.devicesEnriched,
          contract: 'urs/enriched-batch',
          handler: createScoreHandler({
            profiles,
            scores: scoreStoreFor(redis, config.redis),
            publisher,
            topic: config.topics.deviceScores,
            logger,
            metrics,
          }),
          // Held for a profile not read yet at the start: counted, but not against readiness (bounded by
          // URS_SCORER_CATCHUP_TIMEOUT_MS).
          catchingUp: heldWhileCatchingUp,
          // An enriched batch dead-lettered: its cycle does not wait for it.
          deadLettering: recordLostBatches(createCycleStore(redis, prefix)),
        },
      ],
    });
    let cancelCatchUpTimeout = (): void => undefined;
    return {
      runners: [profileRunner, scoreRunner],
      // Once the runners started: where urs.tenants ends now is what the profiles must read before they are
      // used from memory (what was read before counts, and so do records dead-lettered). Until then each
      // batch reads its tenant's profile from the tenant store: scoring does not wait, and readiness does
      // not depend on it.
      async start() {
        // Right after the topic was created its leaders may not answer yet (KRaft): retried while it settles.
        profiles.expectEnd(lastOffsets(await topicOffsets(kafka, config.topics.tenants, { logger })));
        // A read that stalls for good (a record whose dead letter Kafka refuses) would hold the batches whose
        // cycle's profile is not read yet for ever: bounded as the poller bounds its own.
        cancelCatchUpTimeout = bindCatchUpTimeout(profiles, {
          timeoutMs: own.catchUpTimeoutMs,
          logger,
          metrics,
        });
      },
      closers: [
        { name: 'catch-up-timeout', close: async () => cancelCatchUpTimeout() },
        {
          // The profiles group is this process's alone (it reads urs.tenants whole); leaving it would clutter the cluster.
          name: 'profiles-group',
          close: () => deleteOwnGroup(kafka, own.profilesGroupId, profileRunner),
        },
      ],
    };
  },
});

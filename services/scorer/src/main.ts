import { createConsumerRunner } from '@urs/bus';
import { runService } from '@urs/runtime';
import { createScoreStore, createTenantStore } from '@urs/store';
import { scorerConfig } from './config';
import { createScoreHandler } from './handler';
import { createProfileCache, createTenantsHandler } from './profiles';

void runService({
  name: 'scorer',
  defaultMetricsPort: 9103,
  async setup({ env, config, logger, metrics, redis, kafka, publisher }) {
    const own = scorerConfig(env);
    const prefix = config.redis.keyPrefix;
    const profiles = createProfileCache({ tenants: createTenantStore(redis, prefix), logger });
    metrics.gauge('urs_scorer_profiles', 'Tenant profiles held in memory.', () => profiles.size());
    const common = {
      kafka,
      service: 'scorer',
      publisher,
      dlqTopic: config.topics.dlq,
      logger,
      metrics,
      sessionTimeoutMs: own.sessionTimeoutMs,
    };
    const profileRunner = createConsumerRunner({
      ...common,
      groupId: own.profilesGroupId,
      subscriptions: [
        {
          topic: config.topics.tenants,
          contract: 'urs/tenant-record',
          tombstones: true,
          fromBeginning: true,
          handler: createTenantsHandler(profiles),
        },
      ],
    });
    const scoreRunner = createConsumerRunner({
      ...common,
      groupId: own.groupId,
      partitionsConsumedConcurrently: own.partitionsConcurrency,
      subscriptions: [
        {
          topic: config.topics.devicesEnriched,
          contract: 'urs/enriched-batch',
          handler: createScoreHandler({
            profiles,
            scores: createScoreStore(redis, prefix),
            publisher,
            topic: config.topics.deviceScores,
            logger,
            metrics,
          }),
        },
      ],
    });
    return {
      runners: [profileRunner, scoreRunner],
      closers: [
        {
          // The profiles group is this process's alone (it reads urs.tenants whole); leaving it would clutter the cluster.
          name: 'profiles-group',
          close: async () => {
            const admin = kafka.admin();
            await admin.connect();
            try {
              await admin.deleteGroups([own.profilesGroupId]);
            } finally {
              await admin.disconnect();
            }
          },
        },
      ],
    };
  },
});

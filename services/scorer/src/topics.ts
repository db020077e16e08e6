import type { StageTopics } from '@urs/bus';

/**
 * The topics the scorer reads or writes, its dead letters' included: the only ones it makes at start and
 * describes, so that Kafka's ACLs may allow it these alone (README, "Kafka ACLs", and
 * deploy/test/topics.test.ts, which checks them against the topics this stage's code names). Enriched batches
 * and the tenants' profiles in, scored batches out.
 */
export const stageTopics: StageTopics = {
  tenants: 'read',
  devicesEnriched: 'read',
  deviceScores: 'write',
  dlq: 'write',
};

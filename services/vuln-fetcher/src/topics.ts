import type { StageTopics } from '@urs/bus';

/**
 * The topics the vuln-fetcher reads or writes, its dead letters' included: the only ones it makes at start
 * and describes, so that Kafka's ACLs may allow it these alone (README, "Kafka ACLs", and
 * deploy/test/topics.test.ts, which checks them against the topics this stage's code names). Device batches
 * in, enriched batches out.
 */
export const stageTopics: StageTopics = {
  deviceBatches: 'read',
  devicesEnriched: 'write',
  dlq: 'write',
};

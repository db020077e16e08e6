import type { StageTopics } from '@urs/bus';

/**
 * The topics the publisher reads or writes, its dead letters' included: the only ones it makes at start and
 * describes, so that Kafka's ACLs may allow it these alone (README, "Kafka ACLs", and
 * deploy/test/topics.test.ts, which checks them against the topics this stage's code names). Scored batches
 * and the tenants' deletions in, VMS's topics out (vms.risk-scores read back to rebuild which devices VMS
 * holds).
 */
export const stageTopics: StageTopics = {
  tenants: 'read',
  deviceScores: 'read',
  vmsRiskScores: 'read-write',
  vmsRiskSummary: 'write',
  dlq: 'write',
};

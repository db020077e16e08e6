import type { StageTopics } from '@urs/bus';

/**
 * The topics the registrar reads or writes, its dead letters' included: the only ones it makes at start and
 * describes, so that Kafka's ACLs may allow it these alone (README, "Kafka ACLs", and
 * deploy/test/topics.test.ts, which checks them against the topics this stage's code names). Director's
 * pushes in, the tenants' records out (and read back to rebuild Redis).
 */
export const stageTopics: StageTopics = {
  registration: 'read',
  tenants: 'read-write',
  dlq: 'write',
};

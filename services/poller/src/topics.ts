import type { StageTopics } from '@urs/bus';

/**
 * The poller's topics (see `StageTopics`): the tenants' records in (every replica reads them all), device
 * batches out.
 */
export const stageTopics: StageTopics = {
  tenants: 'read',
  deviceBatches: 'write',
  dlq: 'write',
};

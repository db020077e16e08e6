import type { StageTopics } from '@urs/bus';

/**
 * The scorer's topics (see `StageTopics`): enriched batches and the tenants' profiles in, scored batches
 * out.
 */
export const stageTopics: StageTopics = {
  tenants: 'read',
  devicesEnriched: 'read',
  deviceScores: 'write',
  dlq: 'write',
};

import type { StageTopics } from '@urs/bus';

/** The vuln-fetcher's topics (see `StageTopics`): device batches in, enriched batches out. */
export const stageTopics: StageTopics = {
  deviceBatches: 'read',
  devicesEnriched: 'write',
  dlq: 'write',
};

import type { StageTopics } from '@urs/bus';

/**
 * The publisher's topics (see `StageTopics`): scored batches and the tenants' deletions in, VMS's topics out
 * (vms.risk-scores read back to rebuild which devices VMS holds).
 */
export const stageTopics: StageTopics = {
  tenants: 'read',
  deviceScores: 'read',
  vmsRiskScores: 'read-write',
  vmsRiskSummary: 'write',
  dlq: 'write',
};

import type { StageTopics } from '@urs/bus';

/**
 * The registrar's topics (see `StageTopics`): Director's pushes in, the tenants' records out (and read back
 * to rebuild Redis).
 */
export const stageTopics: StageTopics = {
  registration: 'read',
  tenants: 'read-write',
  dlq: 'write',
};

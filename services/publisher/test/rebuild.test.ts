import { silentLogger } from '@urs/logging';
import { UrsError } from '@urs/resilience';
import type { PublishedRebuild } from '@urs/store';
import { createPublishedRebuilder } from '../src/rebuild';

/** A Redis that never held the marker, where this replica always gets the right to rebuild. */
const unrebuilt = (): PublishedRebuild => ({
  isRebuilt: async () => false,
  takeRebuild: async () => true,
  renewRebuild: async () => true,
  releaseRebuild: async () => undefined,
  restore: async () => 0,
  markRebuilt: async () => true,
});

describe('createPublishedRebuilder', () => {
  it('ensure should hand on a read Kafka refused for good as retryable, so the batch waiting on it is not dead-lettered', async () => {
    const refused = new UrsError('CONSUMER_STOPPED', 'reading vms.risk-scores: not authorized', {
      canRetry: false,
    });
    const rebuild = createPublishedRebuilder({
      published: unrebuilt(),
      readKeys: async () => {
        throw refused;
      },
      logger: silentLogger,
    });
    await expect(rebuild.ensure()).rejects.toMatchObject({
      code: 'REBUILD_FAILED',
      canRetry: true,
      cause: refused,
      message: expect.stringMatching(/not authorized/),
    });
  });
});

import type { Publisher } from '@urs/bus';
import type { EnrichedBatch } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createRegistrarStateStore, createTenantStore, scoreStoreFor } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { inboundMessage, type testRedisPerTest } from '@urs/testkit';
import { createScoreHandler } from '../../src/handler';
import { createProfileCache, createTenantsHandler } from '../../src/profiles';

/** A one-batch cycle of two devices without vulnerabilities, of `tenantId`. */
export function enrichedBatch(tenantId: string, cycleId: string, cycleStartedAt: string): EnrichedBatch {
  return {
    schemaVersion: 1,
    tenantId,
    cycleId,
    cycleStartedAt,
    batchIndex: 0,
    lastBatch: true,
    totalBatches: 1,
    totalDevices: 2,
    vulnerabilityMode: 'per-device',
    collectedAt: cycleStartedAt,
    devices: ['d1', 'd2'].map((id) => ({
      machine: { id, riskScore: 'High', lastSeen: cycleStartedAt },
      vulnerabilities: null,
      fetchError: { code: 'X', message: 'y' },
    })),
  };
}

/**
 * A scorer on the test's own Redis prefix, its batches of `tenantId`: what it sent on (the values, and the
 * JSON bytes produced: `sentJson`), how many scores it stored, how many batches it dropped as a deleted tenant's. `caughtUp`: its profiles have read `urs.tenants`
 * to the end (else they come from the tenant store).
 */
export function scorerOnRedis(
  redis: ReturnType<typeof testRedisPerTest>,
  tenantId: string,
  { caughtUp = false }: { caughtUp?: boolean } = {},
) {
  const tenants = createTenantStore(redis.client, redis.prefix);
  const state = createRegistrarStateStore(redis.client, redis.prefix);
  const scores = scoreStoreFor(redis.client, { keyPrefix: redis.prefix, scoreHistoryCycles: 10 });
  const sent: unknown[] = [];
  const sentJson: (string | Buffer | undefined)[] = [];
  const publisher: Publisher = {
    send: async (_topic, _contract, messages) => {
      sent.push(...messages.map((m) => m.value));
      sentJson.push(...messages.map((m) => m.json));
    },
    sendRaw: async () => undefined,
    close: async () => undefined,
  };
  const metrics = new Registry({ processMetrics: false });
  const profiles = createProfileCache({ tenants, logger: silentLogger });
  if (caughtUp) profiles.expectEnd(new Map());
  const handler = createScoreHandler({
    profiles,
    scores,
    publisher,
    topic: 'urs.device-scores',
    logger: silentLogger,
    metrics,
  });
  const tenantsHandler = createTenantsHandler(profiles);
  const score = (batch: EnrichedBatch) => handler(inboundMessage(batch, { key: tenantId }));
  const stored = async () => (await scores.listDeviceScores(tenantId)).total;
  const dropped = () => metrics.counter('urs_batches_of_deleted_tenants_total', '').get();
  return { tenants, state, scores, sent, sentJson, score, stored, dropped, tenantsHandler };
}

import { KafkaJSProtocolError } from 'kafkajs';
import { BusError, type Publisher } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createSecretSealer } from '@urs/secrets';
import type { CycleStore } from '@urs/store';
import { createBatchFit, type BatchFit } from '../../src/batch-fit';
import type { CycleDeps } from '../../src/cycle';
import type { DefenderGateway } from '../../src/defender';

/** The sealer a cycle opens the tenant's client secret with. */
export const sealer = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', Buffer.alloc(32, 3)]]) });

/** Tenant acme's record, its client secret sealed by `sealer`. */
export const sealedRecord = (riskProfile: Record<string, unknown> | null = null): TenantRecord => ({
  schemaVersion: 1,
  tenantId: 'acme',
  revision: 1,
  updatedAt: '2026-01-01T00:00:00.000Z',
  source: 'rest',
  enabled: true,
  defender: {
    azureTenantId: '11111111-2222-3333-4444-555555555555',
    clientId: '66666666-7777-8888-9999-000000000000',
    clientSecret: sealer.seal('Sup3r~secret', 'acme'),
    pollIntervalMinutes: 10,
    cloud: 'commercial',
    region: 'eu',
    riskProfile,
  },
});

/** What the publisher rejects a send with when the broker refuses its record as larger than the topic takes. */
export const recordTooLarge = (): Error =>
  new BusError(
    'RECORD_TOO_LARGE',
    'topic urs.device-batches refused a record as too large (MESSAGE_TOO_LARGE)',
    {
      canRetry: false,
      cause: new KafkaJSProtocolError(
        Object.assign(new Error('The request included a message larger than the max message size'), {
          type: 'MESSAGE_TOO_LARGE',
          code: 10,
          retriable: false,
        }),
      ),
    },
  );

/**
 * The batches' topic as a replica knows it once the topic took a record of `bytes` (1 MB unless told): the last
 * batches of its cycles up to that size keep their totals as pending (`BatchFit`).
 */
export function fitAfterTaking(bytes = 1_000_000): BatchFit {
  const fit = createBatchFit();
  fit.taken(bytes);
  return fit;
}

/**
 * The deps of cycles listing from `defender` (secrets opened by `sealer`) whose batches and cycle records go
 * nowhere: batches of 500 under `batchFit`, an hour at most.
 */
export const unsentCycleDeps = (defender: DefenderGateway, batchFit: BatchFit): CycleDeps => ({
  defender,
  sealer,
  publisher: { send: async () => undefined } as unknown as Publisher,
  cycles: { begin: async () => undefined, listed: async () => undefined } as unknown as CycleStore,
  deviceBatchesTopic: 'urs.device-batches',
  batchSize: 500,
  batchFit,
  maxCycleMs: 3_600_000,
  logger: silentLogger,
});

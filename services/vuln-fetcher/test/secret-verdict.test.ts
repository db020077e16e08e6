import { randomBytes } from 'node:crypto';
import type { TenantRecord } from '@urs/contracts';
import { createReplicaKeyCheck, createSecretSealer, type SecretSealer } from '@urs/secrets';
import type { TenantStatus } from '@urs/store';
import { capturingLogger, storedSecretsOf, type LogLine } from '@urs/testkit';
import { batch, localSources, message, sealedTenant, setup } from './handler-support';

// Whose fault a stored secret the replica's key does not open is: the tenant's bad record when the key opens
// other tenants' secrets, the replica's wrong key when it opens none.

const sealerOf = (key: Buffer): SecretSealer =>
  createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', key]]) });

const tenantRecord = (tenantId: string, sealer: SecretSealer): TenantRecord =>
  sealedTenant({ sealer }).record(tenantId, { revision: 2 });

/** The handler of a replica with `replicaKey`, over stored `records`, counting the store's reads. */
function replica(replicaKey: Buffer, records: TenantRecord[]) {
  const stored = new Map(records.map((each) => [each.tenantId, each]));
  const reads = { ids: 0 };
  const secrets = {
    ...storedSecretsOf(stored),
    ids: async () => {
      reads.ids++;
      return [...stored.keys()];
    },
  };
  const sealer = sealerOf(replicaKey);
  const local = localSources(sealer);
  const lines: LogLine[] = [];
  const statuses: Partial<TenantStatus>[] = [];
  const handled = setup(
    {},
    {
      sources: local.sources,
      replicaKey: createReplicaKeyCheck({ sealer, secrets, keyIds: new Set(['k1']) }),
      tenants: {
        lookup: async (tenantId) => ({ record: stored.get(tenantId) ?? null, rebuilt: true }),
        updatePollingStatus: async (_tenantId, status) => {
          statuses.push(status as Partial<TenantStatus>);
          return true;
        },
      },
      logger: capturingLogger(lines),
    },
  );
  return { ...handled, statuses, lines, reads, close: local.close };
}

describe('createEnrichHandler on a secret its key does not open', () => {
  const registrarKey = randomBytes(32);
  const registrar = sealerOf(registrarKey);

  it("should make it the tenant's failure when the key opens other tenants' secrets", async () => {
    // t1's latest revision was sealed by a registrar started with another key under the same key id.
    const badRecord = tenantRecord('t1', sealerOf(randomBytes(32)));
    const { handler, sent, statuses, close } = replica(registrarKey, [
      badRecord,
      tenantRecord('t2', registrar),
      tenantRecord('t3', registrar),
    ]);
    try {
      await handler(message(batch({ lastBatch: false, totalBatches: undefined, totalDevices: undefined })));
      expect(statuses).toEqual([
        expect.objectContaining({
          state: 'error',
          lastErrorCode: 'SECRET_RECORD_UNREADABLE',
          lastErrorCycleId: 'c1',
          lastErrorMessage: expect.stringMatching(/register the tenant's client secret again/),
        }),
      ]);
      expect(sent).toHaveLength(1);
      for (const device of sent[0]?.devices ?? [])
        expect(device).toMatchObject({
          vulnerabilities: null,
          fetchError: { code: 'SECRET_RECORD_UNREADABLE' },
        });
      // Remembered for the cycle as other tenant-wide failures: its later batches go on at once.
      await handler(message(batch({ batchIndex: 1 })));
      expect(sent).toHaveLength(2);
      expect(statuses).toHaveLength(1);
    } finally {
      close();
    }
  });

  it("should hold the batch as this replica's fault when the key opens no other tenant's secret, logging once", async () => {
    const { handler, sent, statuses, lines, reads, close } = replica(randomBytes(32), [
      tenantRecord('t1', registrar),
      tenantRecord('t2', registrar),
    ]);
    try {
      for (let attempt = 0; attempt < 3; attempt++)
        await expect(handler(message(batch()))).rejects.toMatchObject({
          code: 'SECRET_UNREADABLE',
          canRetry: true,
        });
      expect(sent).toEqual([]);
      expect(statuses).toEqual([]);
      const held = lines.filter((line) => line.code === 'SECRET_UNREADABLE');
      expect(held.map((line) => line.level)).toEqual(['error', 'debug', 'debug']);
      expect(held[0]).toMatchObject({
        tenantId: 't1',
        variables: expect.arrayContaining(['URS_SECRET_KEY']),
      });
      // The verdict is kept: the retries do not read every stored secret again.
      expect(reads.ids).toBe(1);
    } finally {
      close();
    }
  });

  it("should hold the batch as this replica's fault when there is no other tenant's secret to try", async () => {
    const { handler, sent, statuses, close } = replica(randomBytes(32), [tenantRecord('t1', registrar)]);
    try {
      await expect(handler(message(batch()))).rejects.toMatchObject({
        code: 'SECRET_UNREADABLE',
        canRetry: true,
      });
      expect(sent).toEqual([]);
      expect(statuses).toEqual([]);
    } finally {
      close();
    }
  });
});

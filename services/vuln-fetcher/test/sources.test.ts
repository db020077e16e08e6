import { randomBytes } from 'node:crypto';
import type { TenantRecord } from '@urs/contracts';
import { isInfrastructureFault } from '@urs/resilience';
import { createSecretSealer } from '@urs/secrets';
import { ReplicaSecretKeyError, isTenantWideFailure } from '../src/sources';
import { localSources } from './handler-support';

describe('createDefenderSources', () => {
  const sealer = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', randomBytes(32)]]) });
  const record = (tenantId: string, revision: number): TenantRecord =>
    ({
      tenantId,
      revision,
      defender: {
        azureTenantId: '00000000-0000-0000-0000-000000000001',
        clientId: '00000000-0000-0000-0000-000000000002',
        clientSecret: sealer.seal('Zx9~secret', tenantId),
        cloud: 'commercial',
        region: null,
      },
    }) as unknown as TenantRecord;

  it("should keep a tenant's source while its revision holds and it is asked for, and let it go after an idle hour", () => {
    let clock = 0;
    const { sources, close } = localSources(sealer, () => clock);
    try {
      const first = sources.forTenant(record('a', 1));
      const other = sources.forTenant(record('b', 1));
      clock = 50 * 60_000;
      expect(sources.forTenant(record('a', 1))).toBe(first);
      // A new revision (a new secret): a new client.
      expect(sources.forTenant(record('a', 2))).not.toBe(first);
      // b was not asked for in more than an hour (a deleted tenant): let go of, with its secret.
      clock = 70 * 60_000;
      const again = sources.forTenant(record('a', 2));
      expect(sources.forTenant(record('b', 1))).not.toBe(other);
      expect(sources.forTenant(record('a', 2))).toBe(again);
    } finally {
      close();
    }
  });

  it("forTenant should fail retryably, as this replica's fault, when its key does not open the tenant's secret", () => {
    // Another URS_SECRET_KEY under the same URS_SECRET_KEY_ID as the registrar's.
    const wrongKey = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', randomBytes(32)]]) });
    const { sources, close } = localSources(wrongKey);
    try {
      let failure: unknown;
      try {
        sources.forTenant(record('a', 1));
      } catch (error) {
        failure = error;
      }
      expect(failure).toBeInstanceOf(ReplicaSecretKeyError);
      expect(failure).toMatchObject({
        code: 'SECRET_UNREADABLE',
        canRetry: true,
        message: expect.stringMatching(/URS_SECRET_KEY \(URS_SECRET_KEY_ID\)/),
      });
      expect(isTenantWideFailure(failure)).toBe(false);
      // Held by the bus, never dead-lettered: the batch is sound, the replica's key is not.
      expect(isInfrastructureFault(failure)).toBe(true);
    } finally {
      close();
    }
  });

  it("forTenant should fail as the tenant's failure when the secret's key id is held by no key of this process", () => {
    const otherId = createSecretSealer({ activeKeyId: 'k2', keys: new Map([['k2', randomBytes(32)]]) });
    const { sources, close } = localSources(otherId);
    try {
      expect(() => sources.forTenant(record('a', 1))).toThrow(
        expect.objectContaining({ code: 'SECRET_KEY_UNKNOWN', canRetry: false }),
      );
    } finally {
      close();
    }
  });
});

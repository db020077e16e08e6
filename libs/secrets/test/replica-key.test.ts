import { randomBytes } from 'node:crypto';
import {
  createReplicaKeyCheck,
  createSecretSealer,
  secretRecordUnreadable,
  type SealedSecret,
  type SecretSealer,
} from '../src';
import { storedSecretsOf } from '@urs/testkit';

// The verdict on whose fault a stored secret this process's key does not open is: shared by the poller and
// the vuln-fetcher (their own tests cover what each does with it).

const sealerOf = (key: Buffer): SecretSealer =>
  createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', key]]) });

const recordOf = (tenantId: string, sealer: SecretSealer): { defender: { clientSecret: SealedSecret } } => ({
  defender: { clientSecret: sealer.seal('client-secret', tenantId) },
});

describe('createReplicaKeyCheck', () => {
  it('should keep its verdict for a minute, and not rest it on the very tenant asked about', async () => {
    const key = randomBytes(32);
    const sealer = sealerOf(key);
    let clock = 0;
    let reads = 0;
    const stored = new Map([
      ['a', recordOf('a', sealer)],
      ['b', recordOf('b', sealer)],
    ]);
    const check = createReplicaKeyCheck({
      sealer,
      secrets: {
        ...storedSecretsOf(stored),
        ids: async () => {
          reads++;
          return [...stored.keys()];
        },
      },
      keyIds: new Set(['k1']),
      now: () => clock,
    });
    // A k1 secret that does not open is its tenant's record: the other k1 secret opens.
    expect(await check.opensOthers('x', 'k1')).toBe(true);
    clock = 59_000;
    // A k1 secret that does not open is its tenant's record: the other k1 secret opens.
    expect(await check.opensOthers('x', 'k1')).toBe(true);
    expect(reads).toBe(1);
    // It opened a's secret: asked about a, it looks again, without a.
    expect(await check.opensOthers('a', 'k1')).toBe(true);
    expect(reads).toBe(2);
    stored.set('b', recordOf('b', sealerOf(randomBytes(32))));
    clock = 59_000 + 61_000;
    expect(await check.opensOthers('a', 'k1')).toBe(false);
    expect(reads).toBe(3);
  });

  it("should count only other secrets sealed under the failing secret's key id", async () => {
    const previous = randomBytes(32);
    const wrongActive = createSecretSealer({
      activeKeyId: 'k2',
      keys: new Map([
        ['k2', randomBytes(32)],
        ['k1', previous],
      ]),
    });
    const right = createSecretSealer({ activeKeyId: 'k2', keys: new Map([['k2', randomBytes(32)]]) });
    const stored = new Map([
      ['a', recordOf('a', right)],
      ['b', recordOf('b', right)],
      ['old', recordOf('old', createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', previous]]) }))],
    ]);
    const check = createReplicaKeyCheck({
      sealer: wrongActive,
      secrets: storedSecretsOf(stored),
      keyIds: new Set(['k1', 'k2']),
    });
    // Its k2 opens no other k2 secret: its key is wrong, whatever its k1 opens.
    expect(await check.opensOthers('a', 'k2')).toBe(false);
    stored.set('b', recordOf('b', wrongActive));
    expect(await check.opensOthers('a', 'k2')).toBe(false);
    // A k1 secret that does not open is its tenant's record: the other k1 secret opens.
    expect(await check.opensOthers('x', 'k1')).toBe(true);
  });
});

describe('createReplicaKeyCheck with no other secret of the key id', () => {
  const previous = randomBytes(32);
  const active = randomBytes(32);
  const replica = createSecretSealer({
    activeKeyId: 'k2',
    keys: new Map([
      ['k2', active],
      ['k1', previous],
    ]),
  });
  // The only k2 secret is the failing one (early in a rotation); another tenant's is on k1.
  const stored = new Map([
    ['new', recordOf('new', replica)],
    ['old', recordOf('old', createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', previous]]) }))],
  ]);
  const checkWith = (fingerprint: string | null) =>
    createReplicaKeyCheck({
      sealer: replica,
      secrets: storedSecretsOf(stored),
      keyIds: new Set(['k1', 'k2']),
      fingerprints: {
        get: async () => fingerprint,
        claim: async (_keyId, own) => fingerprint ?? own,
        where: (keyId) => `secret-key-fingerprint:${keyId}`,
      },
    });

  it("should take the record for damaged when the key id's stored fingerprint matches this replica's key", async () => {
    expect(await checkWith(replica.fingerprint('k2')).opensOthers('new', 'k2')).toBe(true);
  });

  it("should blame this replica's key when the key id's stored fingerprint differs", async () => {
    const other = createSecretSealer({ activeKeyId: 'k2', keys: new Map([['k2', randomBytes(32)]]) });
    expect(await checkWith(other.fingerprint('k2')).opensOthers('new', 'k2')).toBe(false);
  });

  it('should take the record for damaged, with no fingerprint stored, when a secret of another key id opens', async () => {
    expect(await checkWith(null).opensOthers('new', 'k2')).toBe(true);
  });
});

describe('secretRecordUnreadable', () => {
  it("should be the tenant's own code, with what its admin can do", () => {
    const cause = new Error('unable to authenticate data');
    const error = secretRecordUnreadable({ tenantId: 't1', revision: 3, service: 'poller', cause });
    expect(error).toMatchObject({ code: 'SECRET_RECORD_UNREADABLE', cause });
    expect(error.message).toMatch(/tenant t1 \(record revision 3\) does not open with the poller's key/);
    expect(error.message).toMatch(/register the tenant's client secret again/);
    expect(error.message).toMatch(/URS_SECRET_KEY\)$/);
  });
});

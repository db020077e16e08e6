import { randomBytes } from 'node:crypto';
import { silentLogger } from '@urs/logging';
import {
  checkSecretKey,
  createSecretSealer,
  probeSecretKey,
  type SealedSecret,
  type SecretSealer,
} from '../src';
import { storedSecretsOf } from '@urs/testkit';

const registrarKey = randomBytes(32);
const registrar = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', registrarKey]]) });

const store = (secrets: [string, SealedSecret][]) =>
  storedSecretsOf(
    new Map(secrets.map(([tenantId, clientSecret]) => [tenantId, { defender: { clientSecret } }])),
  );

const check = (key: Buffer, secrets: [string, SealedSecret][]) =>
  checkSecretKey({
    sealer: createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', key]]) }),
    tenants: store(secrets),
    keyIds: new Set(['k1']),
    logger: silentLogger,
  });

describe('checkSecretKey', () => {
  it('checkSecretKey should refuse the start naming URS_SECRET_KEY when its key opens no stored secret', async () => {
    const secrets: [string, SealedSecret][] = ['a', 'b'].map((id) => [id, registrar.seal('s', id)]);
    await expect(check(randomBytes(32), secrets)).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/^URS_SECRET_KEY /),
    });
  });

  it('checkSecretKey should let the start go on when the key opens a stored secret, even beside an altered one', async () => {
    const altered = { ...registrar.seal('s', 'a'), tag: randomBytes(16).toString('base64') };
    await expect(
      check(registrarKey, [
        ['a', altered],
        ['b', registrar.seal('s', 'b')],
      ]),
    ).resolves.toEqual({ proven: new Set(['k1']) });
  });

  it('checkSecretKey should let the start go on with nothing to check (a fresh system, a key id not held)', async () => {
    await expect(check(randomBytes(32), [])).resolves.toEqual({ proven: new Set() });
    const other = createSecretSealer({ activeKeyId: 'k0', keys: new Map([['k0', randomBytes(32)]]) });
    await expect(check(randomBytes(32), [['a', other.seal('s', 'a')]])).resolves.toEqual({
      proven: new Set(),
    });
  });
});

describe('probeSecretKey', () => {
  it('probeSecretKey should say which tenant opened, and try none of the tenants it is told to leave out', async () => {
    const probe = (key: Buffer, except: string[]) =>
      probeSecretKey({
        sealer: createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', key]]) }),
        tenants: store(['a', 'b'].map((id) => [id, registrar.seal('s', id)])),
        keyIds: new Set(['k1']),
        except: new Set(except),
      });
    await expect(probe(registrarKey, ['a'])).resolves.toMatchObject({ openedBy: 'b', tried: 1 });
    await expect(probe(randomBytes(32), ['a'])).resolves.toMatchObject({ openedBy: undefined, tried: 1 });
    await expect(probe(registrarKey, ['a', 'b'])).resolves.toMatchObject({ openedBy: undefined, tried: 0 });
  });
});

describe('checkSecretKey per key id', () => {
  const k1 = registrarKey;
  const k2 = randomBytes(32);
  const rightK2 = randomBytes(32);
  const sealerWith = (k2Key: Buffer) =>
    createSecretSealer({
      activeKeyId: 'k2',
      keys: new Map([
        ['k2', k2Key],
        ['k1', k1],
      ]),
    });
  const fingerprintStore = (stored: Map<string, string>) => ({
    where: (keyId: string) => `urs:secret-key-fingerprint:${keyId}`,
    get: async (keyId: string) => stored.get(keyId) ?? null,
    claim: async (keyId: string, fingerprint: string) => {
      if (!stored.has(keyId)) stored.set(keyId, fingerprint);
      return stored.get(keyId) ?? fingerprint;
    },
  });

  it('checkSecretKey should refuse a mistyped active key whose secrets none open, though a previous key opens its own', async () => {
    const secrets: [string, SealedSecret][] = [
      ['a', registrar.seal('s', 'a')],
      ['b', sealerWith(rightK2).seal('s', 'b')],
    ];
    await expect(
      checkSecretKey({
        sealer: sealerWith(k2),
        tenants: store(secrets),
        keyIds: new Set(['k1', 'k2']),
        logger: silentLogger,
      }),
    ).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/^URS_SECRET_KEY .*key k2/),
    });
  });

  it('checkSecretKey should only warn of a previous key none of whose secrets opens, unless its fingerprint differs', async () => {
    const wrongPrevious = createSecretSealer({
      activeKeyId: 'k2',
      keys: new Map([
        ['k2', rightK2],
        ['k1', randomBytes(32)],
      ]),
    });
    // Late in a rotation: the records left on k1 are the damaged ones (here: ones it does not open).
    const secrets: [string, SealedSecret][] = [
      ['a', sealerWith(rightK2).seal('s', 'a')],
      ['b', sealerWith(rightK2).seal('s', 'b')],
      ['c', createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k1]]) }).seal('s', 'c')],
    ];
    const warns: [string, Record<string, unknown> | undefined][] = [];
    const logger = {
      ...silentLogger,
      warn: (message: string, fields?: Record<string, unknown>) => warns.push([message, fields]),
    };
    const stored = new Map<string, string>();
    const check = () =>
      checkSecretKey({
        sealer: wrongPrevious,
        tenants: store(secrets),
        keyIds: new Set(['k1', 'k2']),
        logger,
        fingerprints: fingerprintStore(stored),
        claimNewKeys: true,
      });
    // No fingerprint of k1 stored: a warning naming the key id and how many were tried; nothing written for k1.
    await expect(check()).resolves.toEqual({ proven: new Set(['k2']) });
    expect(warns).toEqual([
      [
        expect.stringMatching(/^URS_SECRET_KEYS_PREVIOUS opens none/),
        expect.objectContaining({ keyId: 'k1', tried: 1 }),
      ],
    ]);
    expect(stored.has('k1')).toBe(false);
    // Its fingerprint stored and matching: the key is right, the records are damaged.
    stored.set('k1', wrongPrevious.fingerprint('k1'));
    await expect(check()).resolves.toEqual({ proven: new Set(['k1', 'k2']) });
    // Its fingerprint stored and differing: the key is wrong.
    stored.set('k1', sealerWith(rightK2).fingerprint('k1'));
    await expect(check()).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/^URS_SECRET_KEYS_PREVIOUS differs .*key id k1/),
    });
  });

  it('checkSecretKey should refuse a key whose stored fingerprint differs even when secrets sealed under it open', async () => {
    // A registrar with a mistyped k2 sealed these itself; the pollers hold the right k2 and claimed it.
    const mistyped = sealerWith(k2);
    const secrets: [string, SealedSecret][] = [['a', mistyped.seal('s', 'a')]];
    const stored = new Map([['k2', sealerWith(rightK2).fingerprint('k2')]]);
    await expect(
      checkSecretKey({
        sealer: mistyped,
        tenants: store(secrets),
        keyIds: new Set(['k1', 'k2']),
        logger: silentLogger,
        fingerprints: fingerprintStore(stored),
      }),
    ).rejects.toMatchObject({ message: expect.stringMatching(/^URS_SECRET_KEY differs .*key id k2/) });
  });

  it("checkSecretKey should name the fingerprint's Redis key and how to recover when it refuses a key by it", async () => {
    const stored = new Map([['k2', sealerWith(rightK2).fingerprint('k2')]]);
    const error: unknown = await checkSecretKey({
      sealer: sealerWith(k2),
      tenants: store([]),
      keyIds: new Set(['k1', 'k2']),
      logger: silentLogger,
      fingerprints: fingerprintStore(stored),
    }).catch((refusal: unknown) => refusal);
    expect((error as Error).message).toMatch(/stored at urs:secret-key-fingerprint:k2/);
    expect((error as Error).message).toMatch(
      /no stored secret is sealed under key id k2 yet, delete that Redis key/,
    );
    expect((error as Error).message).toMatch(/a new key id/);
  });

  /** `count` records, `t0000`… in id order, each sealed by `sealerAt(i)`; the store counts its round trips. */
  const manyRecords = (count: number, sealerAt: (i: number) => SecretSealer) => {
    const id = (i: number) => `t${String(i).padStart(4, '0')}`;
    const records = new Map(
      Array.from({ length: count }, (_, i) => [
        id(i),
        { defender: { clientSecret: sealerAt(i).seal('s', id(i)) } },
      ]),
    );
    const stored = storedSecretsOf(records);
    const reads = { roundTrips: 0 };
    return {
      reads,
      ids: stored.ids,
      getMany: (tenantIds: readonly string[]) => {
        reads.roundTrips++;
        return stored.getMany(tenantIds);
      },
    };
  };

  it("checkSecretKey should find a previous key id's secrets past the first 100 records", async () => {
    // Late in a rotation: the records left on k1 come after 250 re-sealed ones.
    const onK1 = (i: number) => i >= 250 && i % 10 === 0;
    const k1Only = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k1]]) });
    const tenants = manyRecords(400, (i) => (onK1(i) ? k1Only : sealerWith(rightK2)));
    const stored = new Map<string, string>();
    const warns: [string, Record<string, unknown> | undefined][] = [];
    const logger = {
      ...silentLogger,
      warn: (message: string, fields?: Record<string, unknown>) => warns.push([message, fields]),
    };
    // A poller given a mistyped k1 after a Redis wipe (no fingerprint of k1 stored): its k1 opens none of
    // them; warned about, and k1's fingerprint is not written with it.
    const mistypedK1 = createSecretSealer({
      activeKeyId: 'k2',
      keys: new Map([
        ['k2', rightK2],
        ['k1', randomBytes(32)],
      ]),
    });
    await expect(
      checkSecretKey({
        sealer: mistypedK1,
        tenants,
        keyIds: new Set(['k1', 'k2']),
        logger,
        fingerprints: fingerprintStore(stored),
        claimNewKeys: true,
      }),
    ).resolves.toEqual({ proven: new Set(['k2']) });
    expect(warns).toEqual([
      [
        expect.stringMatching(/^URS_SECRET_KEYS_PREVIOUS opens none/),
        expect.objectContaining({ keyId: 'k1', tried: 5 }),
      ],
    ]);
    expect(stored.has('k1')).toBe(false);
    // The right k1 is proven by them, and its fingerprint written, even by a registrar (which claims no key).
    await expect(
      checkSecretKey({
        sealer: sealerWith(rightK2),
        tenants,
        keyIds: new Set(['k1', 'k2']),
        logger: silentLogger,
        fingerprints: fingerprintStore(stored),
      }),
    ).resolves.toEqual({ proven: new Set(['k1', 'k2']) });
    expect(stored.get('k1')).toBe(sealerWith(rightK2).fingerprint('k1'));
  });

  it('checkSecretKey should read the records in a few round trips when a held key id has none', async () => {
    // The first start of a rotation: k2, the new active key, seals only the last record (one the registrar
    // sealed meanwhile); a mistyped k2 is refused on it all the same.
    const k1Only = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k1]]) });
    const start = manyRecords(2000, (i) => (i === 1999 ? sealerWith(rightK2) : k1Only));
    await expect(
      checkSecretKey({
        sealer: sealerWith(k2),
        tenants: start,
        keyIds: new Set(['k1', 'k2']),
        logger: silentLogger,
      }),
    ).rejects.toMatchObject({ message: expect.stringMatching(/^URS_SECRET_KEY .*key k2/) });
    expect(start.reads.roundTrips).toBeLessThanOrEqual(10);
    // The end of a rotation: no record left on k1, still held.
    const end = manyRecords(2000, () => sealerWith(rightK2));
    await expect(
      checkSecretKey({
        sealer: sealerWith(rightK2),
        tenants: end,
        keyIds: new Set(['k1', 'k2']),
        logger: silentLogger,
      }),
    ).resolves.toEqual({ proven: new Set(['k2']) });
    expect(end.reads.roundTrips).toBeLessThanOrEqual(10);
  });

  it('checkSecretKey should prove a key no stored secret uses only by its stored fingerprint', async () => {
    const secrets: [string, SealedSecret][] = [['a', registrar.seal('s', 'a')]];
    const stored = new Map<string, string>();
    const keyIds = new Set(['k1', 'k2']);
    const check = (k2Key: Buffer, claimNewKeys: boolean) =>
      checkSecretKey({
        sealer: sealerWith(k2Key),
        tenants: store(secrets),
        keyIds,
        logger: silentLogger,
        fingerprints: fingerprintStore(stored),
        claimNewKeys,
      });
    // The registrar does not claim a new key: unproven, and nothing written for it.
    await expect(check(k2, false)).resolves.toEqual({ proven: new Set(['k1']) });
    expect([...stored.keys()]).toEqual(['k1']);
    // A poller rolled out first with the right new key claims it.
    await expect(check(rightK2, true)).resolves.toEqual({ proven: new Set(['k1', 'k2']) });
    // A registrar with the new key mistyped is refused; with the right one it is proven.
    await expect(check(k2, false)).rejects.toMatchObject({
      message: expect.stringMatching(/^URS_SECRET_KEY differs .*key id k2/),
    });
    await expect(check(rightK2, false)).resolves.toEqual({ proven: new Set(['k1', 'k2']) });
    expect(JSON.stringify([...stored.values()])).not.toContain(rightK2.toString('base64'));
  });
});

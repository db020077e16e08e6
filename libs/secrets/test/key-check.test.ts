import { randomBytes } from 'node:crypto';
import { silentLogger } from '@urs/logging';
import { checkSecretKey, createSecretSealer, probeSecretKey, type SealedSecret } from '../src';

const registrarKey = randomBytes(32);
const registrar = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', registrarKey]]) });

function store(secrets: [string, SealedSecret][]) {
  const records = new Map(
    secrets.map(([tenantId, clientSecret]) => [tenantId, { defender: { clientSecret } }]),
  );
  return { ids: async () => [...records.keys()], get: async (id: string) => records.get(id) ?? null };
}

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

  it('checkSecretKey should refuse a wrong previous key naming URS_SECRET_KEYS_PREVIOUS, the active one opening its own', async () => {
    const right = sealerWith(rightK2);
    const wrongPrevious = createSecretSealer({
      activeKeyId: 'k2',
      keys: new Map([
        ['k2', rightK2],
        ['k1', randomBytes(32)],
      ]),
    });
    const secrets: [string, SealedSecret][] = [
      ['a', right.seal('s', 'a')],
      ['b', sealerWith(rightK2).seal('s', 'b')],
      ['c', createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k1]]) }).seal('s', 'c')],
    ];
    await expect(
      checkSecretKey({
        sealer: wrongPrevious,
        tenants: store(secrets),
        keyIds: new Set(['k1', 'k2']),
        logger: silentLogger,
      }),
    ).rejects.toMatchObject({ message: expect.stringMatching(/^URS_SECRET_KEYS_PREVIOUS .*key k1/) });
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

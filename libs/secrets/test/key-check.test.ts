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
    ).resolves.toBeUndefined();
  });

  it('checkSecretKey should let the start go on with nothing to check (a fresh system, a key id not held)', async () => {
    await expect(check(randomBytes(32), [])).resolves.toBeUndefined();
    const other = createSecretSealer({ activeKeyId: 'k0', keys: new Map([['k0', randomBytes(32)]]) });
    await expect(check(randomBytes(32), [['a', other.seal('s', 'a')]])).resolves.toBeUndefined();
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

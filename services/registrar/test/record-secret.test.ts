import type { TenantRecord } from '@urs/contracts';
import { SecretError, createSecretSealer } from '@urs/secrets';
import {
  SecretForOtherAppError,
  TenantGoneError,
  openKeptSecret,
  sameSecret,
  secretToWrite,
} from '../src/record-secret';
import { GUID_A, GUID_B, tenantRecord } from './fakes';

const K0 = Buffer.alloc(32, 1);
const K1 = Buffer.alloc(32, 7);
/** Seals with k1 and still opens k0 (retired). */
const sealer = createSecretSealer({
  activeKeyId: 'k1',
  keys: new Map([
    ['k1', K1],
    ['k0', K0],
  ]),
});
const retiredSealer = createSecretSealer({ activeKeyId: 'k0', keys: new Map([['k0', K0]]) });
const strangerSealer = createSecretSealer({
  activeKeyId: 'k9',
  keys: new Map([['k9', Buffer.alloc(32, 9)]]),
});
/** Another key under the active id: its secrets are not stale, and do not open. */
const impostorSealer = createSecretSealer({
  activeKeyId: 'k1',
  keys: new Map([['k1', Buffer.alloc(32, 3)]]),
});

const SECRET = 'Sup3r~secret-value';
const app = { azureTenantId: GUID_A, clientId: GUID_B };
const stored = (sealed = sealer.seal(SECRET, 'acme')): TenantRecord => {
  const record = tenantRecord('acme', 1);
  return { ...record, defender: { ...record.defender, clientSecret: sealed } };
};

describe('openKeptSecret', () => {
  it('openKeptSecret should open the stored secret of the same app, in any case of its GUIDs', () => {
    expect(openKeptSecret(sealer, 'acme', stored(), { ...app, clientId: GUID_B.toUpperCase() })).toBe(SECRET);
  });

  it('openKeptSecret should refuse a deleted tenant, another app, and a secret no key here opens', () => {
    expect(() => openKeptSecret(sealer, 'acme', null, app)).toThrow(TenantGoneError);
    expect(() => openKeptSecret(sealer, 'acme', stored(), { ...app, cloud: 'gcc' })).toThrow(
      SecretForOtherAppError,
    );
    expect(() => openKeptSecret(sealer, 'acme', stored(strangerSealer.seal(SECRET, 'acme')), app)).toThrow(
      SecretError,
    );
  });
});

describe('sameSecret', () => {
  it('sameSecret should compare the secret sent with the stored one, opened', () => {
    expect(sameSecret(sealer, 'acme', stored(), SECRET, undefined)).toBe(true);
    expect(sameSecret(sealer, 'acme', stored(), 'rotated~secret', undefined)).toBe(false);
    expect(sameSecret(sealer, 'acme', stored(), 'ignored', SECRET)).toBe(true);
  });

  it('sameSecret should never find a secret of a retired key, or one no key here opens, the same', () => {
    const retired = stored(retiredSealer.seal(SECRET, 'acme'));
    expect(sameSecret(sealer, 'acme', retired, SECRET, undefined)).toBe(false);
    expect(sameSecret(sealer, 'acme', retired, 'ignored', SECRET)).toBe(false);
    expect(sameSecret(sealer, 'acme', stored(impostorSealer.seal(SECRET, 'acme')), SECRET, undefined)).toBe(
      false,
    );
  });
});

describe('secretToWrite', () => {
  it('secretToWrite should keep the sealed form of a kept secret, and seal a sent one', () => {
    const current = stored();
    expect(secretToWrite(sealer, 'acme', current, 'ignored', SECRET)).toBe(current.defender.clientSecret);
    const sent = secretToWrite(sealer, 'acme', current, 'rotated~secret', undefined);
    expect(sealer.open(sent, 'acme')).toBe('rotated~secret');
    expect(sealer.open(secretToWrite(sealer, 'acme', null, SECRET, undefined), 'acme')).toBe(SECRET);
  });

  it('secretToWrite should seal a kept secret of a retired key again with the active one', () => {
    const current = stored(retiredSealer.seal(SECRET, 'acme'));
    const resealed = secretToWrite(sealer, 'acme', current, 'ignored', SECRET);
    expect(resealed.keyId).toBe('k1');
    expect(sealer.open(resealed, 'acme')).toBe(SECRET);
  });
});

describe("a retired key's secret while the active key is unproven", () => {
  it('sameSecret should find the unchanged secret of a retired key the same, and secretToWrite keep it sealed as it is', () => {
    const retired = stored(retiredSealer.seal(SECRET, 'acme'));
    expect(sameSecret(sealer, 'acme', retired, SECRET, undefined, false)).toBe(true);
    expect(sameSecret(sealer, 'acme', retired, 'another', undefined, false)).toBe(false);
    expect(secretToWrite(sealer, 'acme', retired, SECRET, undefined, false)).toBe(
      retired.defender.clientSecret,
    );
    expect(secretToWrite(sealer, 'acme', retired, SECRET, SECRET, false)).toBe(retired.defender.clientSecret);
    // A new secret is sealed with the active key all the same: there is no other to seal it with.
    expect(secretToWrite(sealer, 'acme', retired, 'another', undefined, false).keyId).toBe('k1');
  });
});

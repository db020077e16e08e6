import { randomBytes } from 'node:crypto';
import { createSecretSealer } from '@urs/secrets';

const k1 = randomBytes(32);
const k2 = randomBytes(32);

describe('createSecretSealer', () => {
  it('should round-trip a secret and never carry it in clear', () => {
    const sealer = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k1]]) });
    const sealed = sealer.seal('my-client-secret~value', 'tenant-a');
    expect(JSON.stringify(sealed)).not.toContain('my-client-secret');
    expect(sealed.keyId).toBe('k1');
    expect(sealer.open(sealed, 'tenant-a')).toBe('my-client-secret~value');
  });

  it('should not open a secret copied onto another tenant', () => {
    const sealer = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k1]]) });
    const sealed = sealer.seal('s', 'tenant-a');
    expect(() => sealer.open(sealed, 'tenant-b')).toThrow(/does not open/);
  });

  it('should name URS_SECRET_KEY when its key does not open a secret sealed under the same key id', () => {
    const registrar = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k1]]) });
    const misconfigured = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k2]]) });
    const sealed = registrar.seal('s', 't');
    expect(() => misconfigured.open(sealed, 't')).toThrow(
      expect.objectContaining({
        code: 'SECRET_UNREADABLE',
        message: expect.stringMatching(/URS_SECRET_KEY\b/),
      }),
    );
    expect(JSON.stringify(sealed)).not.toContain(k2.toString('base64'));
  });

  it('should open secrets sealed with a previous key after rotation and mark them stale', () => {
    const before = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k1]]) });
    const sealed = before.seal('rotating', 't');
    const after = createSecretSealer({
      activeKeyId: 'k2',
      keys: new Map([
        ['k2', k2],
        ['k1', k1],
      ]),
    });
    expect(after.open(sealed, 't')).toBe('rotating');
    expect(after.isStale(sealed)).toBe(true);
    expect(after.isStale(after.seal('x', 't'))).toBe(false);
  });

  it('should name the missing key id when a key was retired too early', () => {
    const sealed = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k1]]) }).seal('x', 't');
    const sealer = createSecretSealer({ activeKeyId: 'k2', keys: new Map([['k2', k2]]) });
    expect(() => sealer.open(sealed, 't')).toThrow(/key k1, which is not configured/);
  });

  it('should detect tampering', () => {
    const sealer = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k1]]) });
    const sealed = sealer.seal('value', 't');
    const tampered = { ...sealed, ciphertext: Buffer.from('other').toString('base64') };
    expect(() => sealer.open(tampered, 't')).toThrow(/does not open/);
  });

  it('should not open a secret whose tag was cut short', () => {
    const sealer = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', k1]]) });
    const sealed = sealer.seal('value', 't');
    const short = { ...sealed, tag: Buffer.from(sealed.tag, 'base64').subarray(0, 4).toString('base64') };
    expect(() => sealer.open(short, 't')).toThrow(/does not open/);
  });
});

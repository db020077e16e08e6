import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { UrsError } from '@urs/resilience';

/** A client secret at rest: AES-256-GCM, with the id of the key that sealed it (keys rotate). */
export interface SealedSecret {
  alg: 'A256GCM';
  keyId: string;
  /** 12-byte nonce, base64. */
  iv: string;
  /** 16-byte authentication tag, base64. */
  tag: string;
  ciphertext: string;
}

/**
 * `SECRET_KEY_UNKNOWN`: sealed with a key id this process does not hold. `SECRET_UNREADABLE`: sealed with a
 * key id it holds, and its key does not open it (a wrong key, or a bad record: the sealer cannot tell).
 * `SECRET_RECORD_UNREADABLE`: the same, once the key was found to open other tenants' secrets: the tenant's
 * record is bad (`secretRecordUnreadable`).
 */
export class SecretError extends UrsError {
  constructor(
    code: 'SECRET_KEY_UNKNOWN' | 'SECRET_UNREADABLE' | 'SECRET_RECORD_UNREADABLE',
    message: string,
    cause?: unknown,
  ) {
    super(code, message, { cause });
  }
}

export interface SecretSealer {
  /** The key id new secrets are sealed with (URS_SECRET_KEY_ID). */
  readonly activeKeyId: string;
  seal(plain: string, context: string): SealedSecret;
  open(sealed: SealedSecret, context: string): string;
  /** Whether the secret was sealed with a key other than the active one (re-seal it on the next write). */
  isStale(sealed: SealedSecret): boolean;
  /**
   * An HMAC-SHA256 of a constant under the key of `keyId`, base64: compared across processes, it says whether
   * they hold the same key under that id without revealing it. SECRET_KEY_UNKNOWN when the id is not held.
   */
  fingerprint(keyId: string): string;
}

const FINGERPRINT_INPUT = 'urs secret key fingerprint v1';

export interface SealerKeys {
  activeKeyId: string;
  keys: ReadonlyMap<string, Buffer>;
}

/**
 * Seals secrets with the active key; opens with whichever key sealed them. `context` (the tenant id)
 * is bound as additional authenticated data, so a sealed secret copied onto another tenant's record
 * does not open.
 */
export function createSecretSealer(config: SealerKeys): SecretSealer {
  const active = config.keys.get(config.activeKeyId);
  if (!active)
    throw new SecretError('SECRET_KEY_UNKNOWN', `the active key ${config.activeKeyId} is not configured`);
  return {
    activeKeyId: config.activeKeyId,
    seal(plain, context) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', active, iv);
      cipher.setAAD(Buffer.from(context, 'utf8'));
      const ciphertext = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
      return {
        alg: 'A256GCM',
        keyId: config.activeKeyId,
        iv: iv.toString('base64'),
        tag: cipher.getAuthTag().toString('base64'),
        ciphertext: ciphertext.toString('base64'),
      };
    },
    open(sealed, context) {
      const key = config.keys.get(sealed.keyId);
      if (!key) {
        throw new SecretError(
          'SECRET_KEY_UNKNOWN',
          `the secret was sealed with key ${sealed.keyId}, which is not configured (URS_SECRET_KEYS_PREVIOUS)`,
        );
      }
      try {
        // A tag cut short would still open by default (Node accepts 4–16 bytes): only the full 16 do.
        const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.iv, 'base64'), {
          authTagLength: 16,
        });
        decipher.setAAD(Buffer.from(context, 'utf8'));
        decipher.setAuthTag(Buffer.from(sealed.tag, 'base64'));
        return Buffer.concat([
          decipher.update(Buffer.from(sealed.ciphertext, 'base64')),
          decipher.final(),
        ]).toString('utf8');
      } catch (error) {
        // GCM cannot tell a wrong key from an altered record; with every record failing alike (a replica
        // given another URS_SECRET_KEY under the same id) it is the key, so the message names its variables.
        const variable =
          sealed.keyId === config.activeKeyId
            ? 'URS_SECRET_KEY (URS_SECRET_KEY_ID)'
            : 'URS_SECRET_KEYS_PREVIOUS';
        throw new SecretError(
          'SECRET_UNREADABLE',
          `the secret sealed with key ${sealed.keyId} does not open with this process's key ${sealed.keyId}: ` +
            `${variable} differs from the key that sealed it, or the record was altered`,
          error,
        );
      }
    },
    isStale(sealed) {
      return sealed.keyId !== config.activeKeyId;
    },
    fingerprint(keyId) {
      const key = config.keys.get(keyId);
      if (!key) throw new SecretError('SECRET_KEY_UNKNOWN', `the key ${keyId} is not configured`);
      return createHmac('sha256', key).update(FINGERPRINT_INPUT).digest('base64');
    },
  };
}

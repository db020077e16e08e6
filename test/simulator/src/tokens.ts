import {
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  randomUUID,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';

// RS256 access tokens shaped like the v1 app-only tokens Entra issues for the WindowsDefenderATP
// resource (aud = resource URI, iss = sts.windows.net/{tid}/, appid, roles, tid).

export const MDE_RESOURCE = 'https://api.securitycenter.microsoft.com';
/**
 * Audiences MDE accepts; both scopes the docs show map to the same resource. The US Government clouds'
 * resources (the API hosts' URIs, what the client asks for by default in GCC and GCC High/DoD) are accepted
 * too, so a tenant of those clouds reads the simulator as a commercial one does.
 */
export const MDE_AUDIENCES = new Set([
  MDE_RESOURCE,
  'https://securitycenter.onmicrosoft.com/windowsatpservice',
  'https://api.security.microsoft.com',
  'https://api-gcc.securitycenter.microsoft.us',
  'https://api-gov.securitycenter.microsoft.us',
]);

export interface AccessClaims {
  aud: string;
  iss: string;
  iat: number;
  nbf: number;
  exp: number;
  appid: string;
  appidacr: string;
  idp: string;
  oid: string;
  roles?: string[];
  sub: string;
  tid: string;
  uti: string;
  ver: string;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

export class TokenSigner {
  readonly kid: string;
  private readonly privateKey: KeyObject;
  private readonly publicKey: KeyObject;
  /** Verified tokens, so the hot path skips RSA verification; bounded to keep memory flat. */
  private readonly verified = new Map<string, AccessClaims>();

  constructor() {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    this.privateKey = privateKey;
    this.publicKey = createPublicKey(publicKey.export({ type: 'spki', format: 'pem' }));
    this.kid = randomBytes(20).toString('base64url');
  }

  jwks(): { keys: Record<string, unknown>[] } {
    const jwk = this.publicKey.export({ format: 'jwk' });
    return { keys: [{ kty: 'RSA', use: 'sig', kid: this.kid, x5t: this.kid, n: jwk.n, e: jwk.e }] };
  }

  issue(
    tenantId: string,
    clientId: string,
    audience: string,
    roles: readonly string[],
    lifetimeSec: number,
  ): string {
    const nowMs = Date.now();
    const now = Math.floor(nowMs / 1000);
    const claims: AccessClaims = {
      aud: audience,
      iss: `https://sts.windows.net/${tenantId}/`,
      iat: now,
      nbf: now,
      // Rounded up so a token is valid for at least its lifetime even when issued late in a second.
      exp: Math.ceil((nowMs + lifetimeSec * 1000) / 1000),
      appid: clientId,
      appidacr: '1',
      idp: `https://sts.windows.net/${tenantId}/`,
      oid: randomUUID(),
      sub: randomUUID(),
      tid: tenantId,
      uti: randomBytes(16).toString('base64url'),
      ver: '1.0',
    };
    // Entra omits `roles` entirely when nothing was consented.
    if (roles.length > 0) claims.roles = [...roles];
    const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', x5t: this.kid, kid: this.kid }));
    const body = b64url(JSON.stringify(claims));
    const signature = sign('sha256', Buffer.from(`${header}.${body}`), this.privateKey).toString('base64url');
    return `${header}.${body}.${signature}`;
  }

  /** Claims of a token this signer issued, or undefined when malformed or forged (expiry not checked). */
  verify(token: string): AccessClaims | undefined {
    const cached = this.verified.get(token);
    if (cached) return cached;
    const parts = token.split('.');
    if (parts.length !== 3) return undefined;
    const [header, body, signature] = parts as [string, string, string];
    let ok = false;
    try {
      ok = verify(
        'sha256',
        Buffer.from(`${header}.${body}`),
        this.publicKey,
        Buffer.from(signature, 'base64url'),
      );
    } catch {
      return undefined;
    }
    if (!ok) return undefined;
    let claims: AccessClaims;
    try {
      claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as AccessClaims;
    } catch {
      return undefined;
    }
    if (this.verified.size >= 50_000) this.verified.clear();
    this.verified.set(token, claims);
    return claims;
  }
}

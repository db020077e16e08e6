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
 * The WindowsDefenderATP resource's URIs, whose tokens carry the app's Defender for Endpoint roles
 * (Machine.Read.All, Vulnerability.Read.All, …): the two scopes Microsoft's docs show, the resource of their
 * older samples (`https://api.securitycenter.windows.com`), and the US Government clouds' API hosts. Microsoft documents no token scope for GCC, GCC High or DoD: those two URIs are the
 * client's own reading of its docs (the API host's URI, as in commercial), what it asks for by default. The
 * simulator issuing them shows only that the client asks for what it means to, not that Entra issues them.
 */
export const MDE_AUDIENCES = new Set([
  MDE_RESOURCE,
  'https://securitycenter.onmicrosoft.com/windowsatpservice',
  'https://api.securitycenter.windows.com',
  'https://api-gcc.securitycenter.microsoft.us',
  'https://api-gov.securitycenter.microsoft.us',
]);

/**
 * Microsoft 365 Defender's (the Microsoft Threat Protection app's) URI. Entra issues tokens for it and the API
 * hosts take them, but the Defender for Endpoint roles are WindowsDefenderATP's, not its: its tokens carry
 * none of them, so every MDE call made with one is refused 403.
 */
export const THREAT_PROTECTION_RESOURCE = 'https://api.security.microsoft.com';

/**
 * Microsoft Graph, an API every tenant has: Entra issues an app a token for it whatever the app was granted
 * (without `roles` when nothing was), as for any API of the tenant.
 */
export const GRAPH_RESOURCE = 'https://graph.microsoft.com';

/**
 * The resources Entra issues the simulated apps tokens for: WindowsDefenderATP's, Microsoft 365 Defender's and
 * Microsoft Graph. The MDE API refuses every token but WindowsDefenderATP's 403 `Forbidden`: a token of
 * another API carries none of its roles.
 */
export const ISSUED_AUDIENCES = new Set([...MDE_AUDIENCES, THREAT_PROTECTION_RESOURCE, GRAPH_RESOURCE]);

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

import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Checks `Authorization: Bearer <token>` against the configured tokens in constant time: both sides are
 * hashed to equal-length SHA-256 digests (timingSafeEqual needs equal lengths, and comparing digests
 * hides the tokens' lengths too), and every configured token is compared, so the answer's timing says
 * nothing about which token came close.
 */
export function createBearerCheck(tokens: readonly string[]): (authorization: string | undefined) => boolean {
  const digests = tokens.map((token) => createHash('sha256').update(token, 'utf8').digest());
  return (authorization) => {
    // One or more spaces after the scheme (RFC 9110's `1*SP`), and none inside the token.
    const match = /^Bearer +([^\s]+)\s*$/i.exec(authorization ?? '');
    const presented = createHash('sha256')
      .update(match?.[1] ?? '', 'utf8')
      .digest();
    let accepted = false;
    for (const digest of digests) accepted = timingSafeEqual(digest, presented) || accepted;
    return accepted && match !== null;
  };
}

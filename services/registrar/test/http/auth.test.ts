import { createBearerCheck } from '../../src/http/auth';

describe('createBearerCheck', () => {
  const check = createBearerCheck(['first-token-0123456789', 'second-token-0123456789']);

  it('createBearerCheck should accept each configured token', () => {
    expect(check('Bearer first-token-0123456789')).toBe(true);
    expect(check('bearer second-token-0123456789')).toBe(true);
    expect(check('Bearer  first-token-0123456789')).toBe(true);
  });

  it('createBearerCheck should refuse a missing, malformed, partial or unknown token', () => {
    expect(check(undefined)).toBe(false);
    expect(check('')).toBe(false);
    expect(check('Bearer ')).toBe(false);
    expect(check('Basic first-token-0123456789')).toBe(false);
    expect(check('Bearer first-token-012345678')).toBe(false);
    expect(check('Bearer first-token-01234567890')).toBe(false);
    expect(check('first-token-0123456789')).toBe(false);
    expect(check('Bearer first-token 0123456789')).toBe(false);
    expect(check('Bearerfirst-token-0123456789')).toBe(false);
  });
});

import { environmentHasProxy, parseRetryAfterMs } from '../src';

describe('parseRetryAfterMs', () => {
  it('parseRetryAfterMs should read seconds', () => {
    expect(parseRetryAfterMs('12')).toBe(12_000);
    expect(parseRetryAfterMs('0.5')).toBe(500);
  });

  it('parseRetryAfterMs should read an HTTP date relative to now', () => {
    const now = Date.parse('2024-01-01T00:00:00Z');
    expect(parseRetryAfterMs('Mon, 01 Jan 2024 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfterMs('Sun, 31 Dec 2023 23:59:00 GMT', now)).toBe(0);
  });

  it('parseRetryAfterMs should give undefined for a missing or unreadable header', () => {
    expect(parseRetryAfterMs(undefined)).toBeUndefined();
    expect(parseRetryAfterMs('')).toBeUndefined();
    expect(parseRetryAfterMs('soon')).toBeUndefined();
  });
});

describe('environmentHasProxy', () => {
  it('environmentHasProxy should see a proxy axios would use, in either case, and nothing else', () => {
    expect(environmentHasProxy({})).toBe(false);
    expect(environmentHasProxy({ NO_PROXY: '*', HTTPS_PROXY: '' })).toBe(false);
    expect(environmentHasProxy({ HTTPS_PROXY: 'http://proxy:3128' })).toBe(true);
    expect(environmentHasProxy({ https_proxy: 'http://proxy:3128' })).toBe(true);
    expect(environmentHasProxy({ http_proxy: 'proxy:3128' })).toBe(true);
    expect(environmentHasProxy({ ALL_PROXY: 'socks5://proxy:1080' })).toBe(true);
  });
});

import { DEFENDER_CLOUDS, DefenderErrorCode, resolveEndpoints } from '../src';
import { isOtherApiAudience } from '../src/endpoints';

describe('resolveEndpoints', () => {
  it('resolveEndpoints should default to the commercial cloud and the global host', () => {
    expect(resolveEndpoints(undefined, undefined)).toEqual({
      cloud: 'commercial',
      authorityHost: 'https://login.microsoftonline.com',
      apiBase: 'https://api.security.microsoft.com',
      scope: 'https://api.securitycenter.microsoft.com/.default',
      scopeOverridden: false,
      overridden: false,
    });
  });

  it.each(['us', 'eu', 'uk', 'au', 'swa', 'ina', 'aea'])(
    'resolveEndpoints should use the %s regional host',
    (region) => {
      expect(resolveEndpoints('commercial', region).apiBase).toBe(
        `https://${region}.api.security.microsoft.com`,
      );
    },
  );

  it('resolveEndpoints should choose the US Government hosts per cloud', () => {
    expect(resolveEndpoints('gcc', undefined)).toMatchObject({
      authorityHost: 'https://login.microsoftonline.com',
      apiBase: 'https://api-gcc.securitycenter.microsoft.us',
    });
    for (const cloud of ['gcc-high', 'dod']) {
      expect(resolveEndpoints(cloud, 'us')).toMatchObject({
        authorityHost: 'https://login.microsoftonline.us',
        apiBase: 'https://api-gov.securitycenter.microsoft.us',
        scope: 'https://api-gov.securitycenter.microsoft.us/.default',
      });
    }
  });

  it('resolveEndpoints should accept any case of cloud and region', () => {
    expect(resolveEndpoints('Commercial', 'EU').apiBase).toBe('https://eu.api.security.microsoft.com');
  });

  it('resolveEndpoints should reject an unknown cloud or region naming the field', () => {
    expect(() => resolveEndpoints('azure-china', undefined)).toThrow(
      /cloud must be one of commercial, gcc, gcc-high, dod/,
    );
    expect(() => resolveEndpoints('commercial', 'https://evil.example')).toThrow(
      expect.objectContaining({
        code: DefenderErrorCode.INVALID_CONFIG,
        message: expect.stringMatching(/^region must be one of/),
      }),
    );
  });

  it('resolveEndpoints should let only the operator override the hosts, for every cloud, keeping the scope', () => {
    const overrides = { authorityHost: 'https://127.0.0.1:8443/', apiBase: 'https://127.0.0.1:8443' };
    expect(resolveEndpoints('gcc-high', 'eu', overrides)).toEqual({
      cloud: 'gcc-high',
      authorityHost: 'https://127.0.0.1:8443',
      apiBase: 'https://127.0.0.1:8443',
      scope: 'https://api-gov.securitycenter.microsoft.us/.default',
      scopeOverridden: false,
      overridden: true,
    });
  });

  it("resolveEndpoints should take a cloud's scope override for that cloud only, and the global one over it", () => {
    const scopes = { 'gcc-high': 'https://api.securitycenter.microsoft.us/.default' };
    expect(resolveEndpoints('gcc-high', undefined, { scopes })).toMatchObject({
      scope: 'https://api.securitycenter.microsoft.us/.default',
      scopeOverridden: true,
      overridden: false,
    });
    expect(resolveEndpoints('dod', undefined, { scopes })).toMatchObject({
      scope: 'https://api-gov.securitycenter.microsoft.us/.default',
      scopeOverridden: false,
    });
    expect(resolveEndpoints('gcc', undefined, { scopes })).toMatchObject({
      scope: 'https://api-gcc.securitycenter.microsoft.us/.default',
      scopeOverridden: false,
    });
    expect(
      resolveEndpoints('gcc-high', undefined, { scopes, scope: 'api://11111111-2222/.default' }).scope,
    ).toBe('api://11111111-2222/.default');
  });

  it('resolveEndpoints should refuse an override that is not https', () => {
    expect(() => resolveEndpoints(undefined, undefined, { authorityHost: 'http://127.0.0.1:8080' })).toThrow(
      /authorityHost must use https/,
    );
    expect(() => resolveEndpoints(undefined, undefined, { apiBase: 'not a url' })).toThrow(
      /apiBase must be an absolute https URL/,
    );
  });
});

describe('isOtherApiAudience', () => {
  it('isOtherApiAudience should take Microsoft Graph and Microsoft 365 Defender for other APIs, in any case, with a trailing slash or not', () => {
    for (const audience of [
      'https://graph.microsoft.com',
      'https://graph.microsoft.com/',
      'https://Graph.Microsoft.US',
      'https://dod-graph.microsoft.us',
      '00000003-0000-0000-C000-000000000000',
      'https://api.security.microsoft.com',
    ])
      expect(isOtherApiAudience(audience)).toBe(true);
  });

  it('isOtherApiAudience should take no audience of WindowsDefenderATP, nor one it does not know, for another API', () => {
    for (const audience of [
      'https://api.securitycenter.microsoft.com',
      'https://securitycenter.onmicrosoft.com/windowsatpservice',
      'https://API.securitycenter.windows.com',
      'fc780465-2017-40d4-a0c5-307022471b92',
      'api://fc780465-2017-40d4-a0c5-307022471b92',
      'https://wdatp.gov.example',
    ])
      expect(isOtherApiAudience(audience)).toBe(false);
    // A US Government tenant's token is of its cloud's default scope: never taken for another API's.
    for (const cloud of DEFENDER_CLOUDS)
      expect(isOtherApiAudience(resolveEndpoints(cloud, undefined).scope.replace(/\/\.default$/, ''))).toBe(
        false,
      );
  });
});

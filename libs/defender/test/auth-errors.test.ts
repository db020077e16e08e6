import { inspect } from 'node:util';
import { DefenderErrorCode, mapAuthError } from '../src';

const app = {
  azureTenantId: 'tenant-1',
  clientId: 'client-1',
  clientSecret: 'Sup3r~S3cret.Value_0123456789',
};

/** The shape @azure/identity's AuthenticationError has (errorResponse with the token endpoint's fields). */
function authenticationError(status: number, error: string, codes: number[], description: string): Error {
  return Object.assign(new Error(`${error} Status code: ${status}\nMore details:\n${description}`), {
    name: 'AuthenticationError',
    statusCode: status,
    errorResponse: {
      error,
      errorDescription: description,
      errorCodes: codes,
      correlationId: 'corr-1',
      traceId: 'trace-1',
    },
  });
}

describe('mapAuthError', () => {
  it.each([
    [7000215, DefenderErrorCode.INVALID_SECRET, /Paste the secret's Value, not its ID/],
    [7000222, DefenderErrorCode.SECRET_EXPIRED, /has expired/],
    [700016, DefenderErrorCode.UNKNOWN_CLIENT, /No application with client id client-1/],
    [90002, DefenderErrorCode.UNKNOWN_TENANT, /does not know tenant tenant-1/],
    [500011, DefenderErrorCode.NOT_PROVISIONED, /Defender for Endpoint is not present/],
  ])('mapAuthError should map AADSTS%s from errorCodes to %s', (code, expected, message) => {
    const error = mapAuthError(
      authenticationError(400, 'invalid_client', [code], `AADSTS${code}: something.`),
      app,
    );
    expect(error.code).toBe(expected);
    expect(error.message).toMatch(message);
    expect(error.canRetry).toBe(false);
    expect(error.details).toMatchObject({ aadsts: [code], correlationId: 'corr-1', traceId: 'trace-1' });
  });

  it('mapAuthError should read AADSTS codes from the message of MSAL errors rewrapped by @azure/identity', () => {
    const error = mapAuthError(
      Object.assign(
        new Error(
          'invalid_client: Error(s): 7000215 - Description: AADSTS7000215: Invalid client secret provided.',
        ),
        {
          name: 'AuthenticationRequiredError',
        },
      ),
      app,
    );
    expect(error.code).toBe(DefenderErrorCode.INVALID_SECRET);
  });

  it('mapAuthError should treat 5xx and network errors from Entra as retryable outages', () => {
    expect(
      mapAuthError(authenticationError(503, 'temporarily_unavailable', [], 'try later'), app),
    ).toMatchObject({
      code: DefenderErrorCode.UNAVAILABLE,
      canRetry: true,
    });
    expect(
      mapAuthError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), app),
    ).toMatchObject({
      code: DefenderErrorCode.UNAVAILABLE,
      canRetry: true,
    });
  });

  it('mapAuthError should keep other sign-in failures as AUTH_FAILED with the codes', () => {
    const error = mapAuthError(
      authenticationError(400, 'invalid_scope', [70011], 'AADSTS70011: The provided scope is invalid.'),
      app,
    );
    expect(error.code).toBe(DefenderErrorCode.AUTH_FAILED);
    expect(error.message).toContain('AADSTS70011');
  });

  it('mapAuthError should never carry the client secret, even when the upstream text contains it', () => {
    const upstream = authenticationError(
      401,
      'invalid_client',
      [7000215],
      `AADSTS7000215: bad secret ${app.clientSecret} given`,
    );
    const errors = [
      mapAuthError(upstream, app),
      mapAuthError(authenticationError(400, 'weird', [], `echo: client_secret=${app.clientSecret}`), app),
      mapAuthError(new Error(`socket hang up ${app.clientSecret}`), app),
    ];
    for (const error of errors) {
      for (const text of [
        error.message,
        error.stack ?? '',
        JSON.stringify(error),
        inspect(error, { depth: Infinity }),
      ]) {
        expect(text).not.toContain(app.clientSecret);
      }
    }
  });

  it("mapAuthError should carry neither the URL-encoded secret nor tokens and secret fields of Entra's text", () => {
    const encodable = { ...app, clientSecret: 'Ab+cD/ef=Gh~Value_0123456789' };
    const encoded = encodeURIComponent(encodable.clientSecret);
    const jwt = 'eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2FwaSJ9.c2lnbmF0dXJlLXZhbHVl';
    const cases = [
      authenticationError(400, 'invalid_request', [], `AADSTS900144: body was ${encoded} as sent`),
      authenticationError(503, 'temporarily_unavailable', [50000], `AADSTS50000: echo ${encoded}`),
      authenticationError(400, 'invalid_request', [], `AADSTS900144: Authorization: Bearer ${jwt} sent`),
      authenticationError(400, 'invalid_request', [], `AADSTS900144: {"client_secret":"other-secret-value"}`),
    ];
    for (const upstream of cases) {
      const error = mapAuthError(upstream, encodable);
      for (const text of [error.message, JSON.stringify(error), inspect(error, { depth: Infinity })]) {
        expect(text).not.toContain(encoded);
        expect(text).not.toContain(jwt);
        expect(text).not.toContain('other-secret-value');
      }
    }
  });
});

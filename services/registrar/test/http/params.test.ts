import { tenantIdOf } from '../../src/http/params';
import { ApiError, type ApiRequest } from '../../src/http/router';

const withTenant = (tenantId: string | undefined): ApiRequest => ({
  method: 'GET',
  path: '/v1/tenants/x/defender',
  params: tenantId === undefined ? {} : { tenantId },
  query: new URLSearchParams(),
  body: undefined,
  headers: {},
  signal: new AbortController().signal,
});

describe('tenantIdOf', () => {
  it('tenantIdOf should return a valid tenant id of the path', () => {
    expect(tenantIdOf(withTenant('acme.eu-1'))).toBe('acme.eu-1');
  });

  it('tenantIdOf should refuse an invalid or missing tenant id with 400 naming the field and the rule', () => {
    for (const bad of ['-acme', 'a'.repeat(65), 'ac me', '', undefined]) {
      let caught: unknown;
      try {
        tenantIdOf(withTenant(bad));
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(ApiError);
      expect((caught as ApiError).status).toBe(400);
      expect((caught as ApiError).toBody()).toEqual({
        error: {
          code: 'VALIDATION_FAILED',
          message: 'the tenant id in the path is not valid',
          violations: [
            {
              field: 'tenantId',
              rule: 'must be 1–64 letters, digits, dots, dashes or underscores, starting with a letter or digit',
            },
          ],
        },
      });
    }
  });
});

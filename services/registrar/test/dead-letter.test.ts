import { redactPushPayload, redactTenantPayload } from '../src/dead-letter';
import { registrationBody } from './fakes';

const SECRET = 'Zz77Q~not-to-be-seen';

describe('redactPushPayload', () => {
  it('should keep the values the contract pins down, and the structure', () => {
    const push = {
      schemaVersion: 2,
      generation: 12,
      mode: 'FULL',
      tenants: [
        {
          tenantId: 'acme',
          defender: registrationBody({
            cloud: 'gcc',
            region: null,
            riskProfile: { weights: { criticalRisk: 60, operational: 40 }, missingSignals: 'assume-worst' },
          }),
        },
      ],
    };
    expect(JSON.parse(redactPushPayload(JSON.stringify(push)))).toEqual({
      ...push,
      tenants: [
        {
          tenantId: 'acme',
          defender: { ...push.tenants[0]?.defender, clientSecret: '[redacted]' },
        },
      ],
    });
  });

  it.each([
    ['a misspelt key in a defender', { tenants: [{ tenantId: 'a', defender: { clientSecert: SECRET } }] }],
    ['an unknown top-level key', { mode: 'delta', credential: SECRET }],
    ['an unknown object', { credentials: { value: SECRET, list: [SECRET, 7] } }],
    ['tenants as an object', { tenants: { acme: { tenantId: 'acme', defender: { pwd: SECRET } } } }],
    ['a secret in a known field', { tenants: [{ tenantId: 'a', defender: { clientId: SECRET } }] }],
    ['a secret as a tenant entry', { tenants: [SECRET, { tenantId: SECRET }] }],
    ['a risk profile', { tenants: [{ defender: { riskProfile: { note: SECRET, weights: SECRET } } }] }],
    ['a push as an array', [{ tenantId: 'acme', clientSecret: SECRET }]],
  ])('should replace every other string and number at any depth (%s)', (_case, push) => {
    const redacted = redactPushPayload(JSON.stringify(push));
    expect(redacted).not.toContain(SECRET);
    expect(redacted).toContain('[redacted]');
  });

  it('should keep the keys, booleans and nulls of a push that is not of the expected shape', () => {
    const push = { tenants: { acme: { enabled: true, region: null, pwd: SECRET, port: 443 } } };
    expect(JSON.parse(redactPushPayload(JSON.stringify(push)))).toEqual({
      tenants: { acme: { enabled: true, region: null, pwd: '[redacted]', port: '[redacted]' } },
    });
  });

  it('should withhold text that is not JSON, or a JSON string, whole', () => {
    for (const text of [`{"pwd":"${SECRET}"`, JSON.stringify(JSON.stringify({ pwd: SECRET })), SECRET]) {
      expect(redactPushPayload(text)).toBe(
        `[withheld: ${Buffer.byteLength(text)} bytes that are not a JSON object and may hold a secret]`,
      );
    }
  });
});

describe('redactTenantPayload', () => {
  it('should keep a refused tenant entry as the push keeps it', () => {
    const entry = { tenantId: 'acme', defender: registrationBody({ azureTenantId: SECRET }), pwd: SECRET };
    expect(JSON.parse(redactTenantPayload(JSON.stringify(entry)))).toEqual({
      tenantId: 'acme',
      defender: {
        ...registrationBody(),
        azureTenantId: '[redacted]',
        clientSecret: '[redacted]',
      },
      pwd: '[redacted]',
    });
  });
});

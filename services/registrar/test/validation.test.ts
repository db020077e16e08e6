import { validateRegistration, describeViolations, restRefusal } from '../src/validation';
import { registrationBody } from './fakes';

const registration = (defender: Record<string, unknown>, tenantId: unknown = 'acme') => ({
  tenantId,
  defender,
});

describe('validateRegistration', () => {
  it('validateRegistration should accept a complete registration', () => {
    const result = validateRegistration(
      registration(registrationBody({ cloud: 'gcc', region: 'eu', riskProfile: null })),
    );
    expect(result.ok).toBe(true);
  });

  it('validateRegistration should take a null cloud, as a null region, for the default', () => {
    expect(validateRegistration(registration(registrationBody({ cloud: null, region: null }))).ok).toBe(true);
  });

  it.each([
    [
      'tenantId',
      registration(registrationBody(), 'has space'),
      'tenantId',
      /^must be 1–64 letters, digits, dots, dashes or underscores, starting with a letter or digit$/,
    ],
    [
      'azureTenantId',
      registration(registrationBody({ azureTenantId: 'abc' })),
      'defender.azureTenantId',
      /^must be a GUID \(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\)$/,
    ],
    ['clientId', registration(registrationBody({ clientId: 42 })), 'defender.clientId', /^must be a string$/],
    [
      'empty secret',
      registration(registrationBody({ clientSecret: '' })),
      'defender.clientSecret',
      /^must not be empty$/,
    ],
    [
      'riskProfile',
      registration(registrationBody({ riskProfile: 'default' })),
      'defender.riskProfile',
      /^must be an object or null$/,
    ],
    ['not an object', 'acme', '(message)', /^must be an object$/],
    [
      'interval below',
      registration(registrationBody({ pollIntervalMinutes: 9 })),
      'defender.pollIntervalMinutes',
      /^must be a whole number from 10 to 1440$/,
    ],
    [
      'interval above',
      registration(registrationBody({ pollIntervalMinutes: 1441 })),
      'defender.pollIntervalMinutes',
      /^must be a whole number from 10 to 1440$/,
    ],
    [
      'interval fraction',
      registration(registrationBody({ pollIntervalMinutes: 10.5 })),
      'defender.pollIntervalMinutes',
      /integer/,
    ],
    ['cloud', registration(registrationBody({ cloud: 'mars' })), 'defender.cloud', /one of commercial/],
    [
      'unknown field',
      registration(registrationBody({ url: 'https://x' })),
      'defender.url',
      /not a known field/,
    ],
  ])('validateRegistration should name the field and the rule (%s)', (_case, input, field, rule) => {
    const result = validateRegistration(input);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const violation = result.violations.find((v) => v.field === field);
    expect(violation?.rule).toMatch(rule);
  });

  it.each([
    ['spaces only', '   '],
    ['a trailing line break (pasted)', 'Sup3r~secret-value\n'],
    ['a leading space', ' Sup3r~secret-value'],
    ['a control character', 'Sup3r\u0000secret'],
    ['an unpaired surrogate', 'abc8Q~secret\ud800'],
  ])(
    'validateRegistration should refuse a secret with %s, naming the rule in words',
    (_case, clientSecret) => {
      expect(validateRegistration(registration(registrationBody({ clientSecret })))).toEqual({
        ok: false,
        violations: [
          {
            field: 'defender.clientSecret',
            rule:
              "must be the secret's Value as Entra ID shows it: no spaces or line breaks at its start or end, " +
              'no control characters, no invisible format characters (a zero-width space, a word joiner), ' +
              'no unpaired UTF-16 surrogates',
          },
        ],
      });
    },
  );

  it.each([
    ['inner spaces', 'Sup3r secret value'],
    ['letters beyond ASCII', 'Sup3r~Schlüssel~秘密'],
  ])('validateRegistration should accept a secret with %s', (_case, clientSecret) => {
    expect(validateRegistration(registration(registrationBody({ clientSecret }))).ok).toBe(true);
  });

  it('validateRegistration should name a missing secret', () => {
    const { clientSecret: _omit, ...rest } = registrationBody();
    const result = validateRegistration(registration(rest));
    expect(result).toEqual({
      ok: false,
      violations: [{ field: 'defender.clientSecret', rule: 'is required' }],
    });
  });

  it('validateRegistration should check the risk profile with the scoring rules', () => {
    const result = validateRegistration(
      registration(registrationBody({ riskProfile: { weights: { criticalRisk: 80 }, colour: 'red' } })),
    );
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.violations.map((v) => v.field)).toContain('defender.riskProfile.colour');
    const weights = validateRegistration(
      registration(registrationBody({ riskProfile: { weights: { criticalRisk: 80 } } })),
    );
    expect(weights.ok).toBe(false);
    if (weights.ok) return;
    expect(weights.violations).toEqual([
      { field: 'defender.riskProfile.weights', rule: expect.stringMatching(/total exactly 100/) },
    ]);
  });

  it.each([
    [
      'a choice',
      { missingSignals: 'Zx9~value' },
      'defender.riskProfile.missingSignals',
      'must be one of "ignore", "assume-worst"',
    ],
    [
      'points',
      { weights: { criticalRisk: 'Zx9~value' } },
      'defender.riskProfile.weights.criticalRisk',
      'must be an integer from 0 to 100',
    ],
    ['a section', { critical: 'Zx9~value' }, 'defender.riskProfile.critical', 'must be an object'],
  ])(
    'validateRegistration should word a refused risk profile field (%s) without its value',
    (_case, riskProfile, field, rule) => {
      expect(validateRegistration(registration(registrationBody({ riskProfile })))).toEqual({
        ok: false,
        violations: [{ field, rule }],
      });
    },
  );

  it('validateRegistration should word weights that do not total 100 without their values', () => {
    expect(
      validateRegistration(
        registration(registrationBody({ riskProfile: { weights: { criticalRisk: 53 } } })),
      ),
    ).toEqual({
      ok: false,
      violations: [
        {
          field: 'defender.riskProfile.weights',
          rule: 'criticalRisk + operational must total exactly 100 (a weight left out takes its default 70/30)',
        },
      ],
    });
  });

  it.each([
    [
      'a fraction below the range',
      { pollIntervalMinutes: 9.5 },
      'defender.pollIntervalMinutes',
      'must be an integer and must be a whole number from 10 to 1440',
    ],
    [
      'a secret too long with a trailing space',
      { clientSecret: `${'x'.repeat(1100)} ` },
      'defender.clientSecret',
      'must be at most 1024 characters long and ' +
        "must be the secret's Value as Entra ID shows it: no spaces or line breaks at its start or end, " +
        'no control characters, no invisible format characters (a zero-width space, a word joiner), ' +
        'no unpaired UTF-16 surrogates',
    ],
    [
      'a cloud of neither kind',
      { cloud: 'mars' },
      'defender.cloud',
      /^must be one of commercial, .* or must be null$/,
    ],
    ['a region of neither kind', { region: 7 }, 'defender.region', /^must be one of .* or must be null$/],
  ])(
    'validateRegistration should join rules broken together with "and", alternatives with "or" (%s)',
    (_case, overrides, field, rule) => {
      const result = validateRegistration(registration(registrationBody(overrides)));
      expect(result).toEqual({
        ok: false,
        violations: [{ field, rule: typeof rule === 'string' ? rule : expect.stringMatching(rule) }],
      });
    },
  );

  it('validateRegistration should list every violation and never the secret value', () => {
    const result = validateRegistration(
      registration(registrationBody({ azureTenantId: 'x', pollIntervalMinutes: 0, clientSecret: 7 })),
    );
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.violations.length).toBeGreaterThanOrEqual(3);
    expect(describeViolations(result.violations)).not.toContain('Sup3r');
  });
});

describe('restRefusal', () => {
  it('should name the fields of a stored refusal as a REST body does, and keep the count of the violations it does not list', () => {
    const violations = Array.from({ length: 50 }, (_, i) => ({
      field: `defender.unknown${i}`,
      rule: 'is not a known field',
    }));
    const stored = {
      code: 'REGISTRATION_INVALID',
      message: `registration refused: ${describeViolations(violations, 70)}`,
      violations,
    };
    expect(stored.message).toMatch(/defender\.unknown49 is not a known field \(\+20 more\)$/);
    const shown = restRefusal(stored);
    expect(shown.violations[0]).toEqual({ field: 'unknown0', rule: 'is not a known field' });
    expect(shown.message).toMatch(/^registration refused: unknown0 is not a known field; /);
    expect(shown.message).toMatch(/; unknown49 is not a known field \(\+20 more\)$/);
  });
});

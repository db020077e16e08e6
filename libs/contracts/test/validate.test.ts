import {
  ALL_SCHEMAS,
  CLIENT_SECRET_RULE,
  PATTERN_RULES,
  TENANT_ID_RULE,
  checkMessage,
  compileContracts,
  type ContractId,
  validateMessage,
  scoreBatchSchema,
  vmsRiskScoreSchema,
  type DeviceBatch,
  type DeviceRecord,
  type TenantRegistration,
} from '@urs/contracts';

const registration: TenantRegistration = {
  tenantId: 'acme',
  defender: {
    enabled: true,
    azureTenantId: '8f2a3c1e-4b5d-4e6f-9a7b-0c1d2e3f4a5b',
    clientId: '1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9',
    clientSecret: 'value~of~the~secret',
    pollIntervalMinutes: 60,
  },
};

/** A batch's header: batch 0 (not the last) of acme's per-device cycle c1, no devices; `overrides` replace fields. */
const batchHeader = (overrides: Record<string, unknown> = {}) => ({
  schemaVersion: 1,
  tenantId: 'acme',
  cycleId: 'c1',
  cycleStartedAt: new Date().toISOString(),
  batchIndex: 0,
  lastBatch: false,
  vulnerabilityMode: 'per-device',
  devices: [],
  ...overrides,
});

describe('validateMessage', () => {
  it('should accept a valid registration and return it typed', () => {
    expect(validateMessage('urs/tenant-registration', registration).tenantId).toBe('acme');
  });

  it('should name the field and the rule for a poll interval out of range', () => {
    const bad = { ...registration, defender: { ...registration.defender, pollIntervalMinutes: 5 } };
    expect(() => validateMessage('urs/tenant-registration', bad)).toThrow(
      'urs/tenant-registration: defender.pollIntervalMinutes must be a whole number from 10 to 1440',
    );
  });

  it('should name a missing field', () => {
    const { clientId: _omit, ...defender } = registration.defender;
    expect(() => validateMessage('urs/tenant-registration', { ...registration, defender })).toThrow(
      /defender\.clientId is required/,
    );
  });

  it('should refuse unknown fields in a registration', () => {
    expect(() =>
      validateMessage('urs/tenant-registration', { ...registration, url: 'https://evil' }),
    ).toThrow(/url is not a known field/);
  });

  it('should require the totals on a last batch', () => {
    const batch: DeviceBatch = {
      schemaVersion: 1,
      tenantId: 'acme',
      cycleId: 'c1',
      cycleStartedAt: new Date().toISOString(),
      batchIndex: 0,
      lastBatch: true,
      vulnerabilityMode: 'per-device',
      cvssThreshold: 9,
      // A field beyond the device record, as a whole machine from an older poller carries.
      devices: [{ id: 'a'.repeat(40), someUndocumentedField: 1 } as DeviceRecord],
    };
    expect(() => validateMessage('urs/device-batch', batch)).toThrow(/totalBatches is required/);
    expect(
      validateMessage('urs/device-batch', { ...batch, totalBatches: 1, totalDevices: 1 }).devices,
    ).toHaveLength(1);
  });

  it("should take the hash of the cycle's profile on a device batch and an enriched batch, and go without it", () => {
    const header = batchHeader();
    const deviceBatch = { ...header, cvssThreshold: 9 };
    const enrichedBatch = { ...header, collectedAt: new Date().toISOString() };
    for (const [contract, batch] of [
      ['urs/device-batch', deviceBatch],
      ['urs/enriched-batch', enrichedBatch],
    ] as const) {
      expect(checkMessage(contract, batch)).toEqual([]);
      expect(checkMessage(contract, { ...batch, profileHash: 'a1b2' })).toEqual([]);
      expect(checkMessage(contract, { ...batch, profileHash: '' })).toEqual([
        { field: 'profileHash', rule: 'must not be empty' },
      ]);
    }
  });
});

describe('validateMessage of a bulk correction', () => {
  it('should accept a correction to no vulnerabilities, with why, as a device of a batch may be', () => {
    const correction = {
      schemaVersion: 1,
      tenantId: 'acme',
      cycleId: 'c1',
      cycleStartedAt: new Date().toISOString(),
      batchIndex: 4,
      lastBatch: false,
      vulnerabilityMode: 'bulk',
      collectedAt: new Date().toISOString(),
      devices: [],
      corrections: [
        {
          deviceId: 'a'.repeat(40),
          vulnerabilities: null,
          fetchError: { code: 'DEFENDER_UNREADABLE_RECORDS', message: 'no row of the device could be read' },
        },
      ],
    };
    expect(validateMessage('urs/enriched-batch', correction).corrections?.[0]?.vulnerabilities).toBeNull();
  });
});

describe('checkMessage', () => {
  it('should list every violation', () => {
    const bad = {
      tenantId: 'has space',
      defender: { ...registration.defender, clientId: 'not-a-guid', cloud: 'mars' },
    };
    const fields = checkMessage('urs/tenant-registration', bad).map((violation) => violation.field);
    expect(fields).toEqual(expect.arrayContaining(['tenantId', 'defender.clientId', 'defender.cloud']));
  });
});

describe('checkMessage rules', () => {
  const defender = (overrides: Record<string, unknown>) => ({
    ...registration,
    defender: { ...registration.defender, ...overrides },
  });
  const push = { schemaVersion: 1, generation: 1, mode: 'full', tenants: [] };

  it.each([
    [
      'a GUID',
      defender({ azureTenantId: 'abc', clientId: 'not-a-guid' }),
      [
        { field: 'defender.azureTenantId', rule: 'must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)' },
        { field: 'defender.clientId', rule: 'must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)' },
      ],
    ],
    [
      'a tenant id',
      { ...registration, tenantId: 'has space' },
      [{ field: 'tenantId', rule: TENANT_ID_RULE }],
    ],
    [
      'a risk profile of the wrong kind',
      defender({ riskProfile: 'default' }),
      [{ field: 'defender.riskProfile', rule: 'must be an object or null' }],
    ],
    [
      'an empty secret',
      defender({ clientSecret: '' }),
      [{ field: 'defender.clientSecret', rule: 'must not be empty' }],
    ],
    [
      'a secret too long',
      defender({ clientSecret: 'x'.repeat(1025) }),
      [{ field: 'defender.clientSecret', rule: 'must be at most 1024 characters long' }],
    ],
    ...[
      ['spaces only', '   '],
      ['a trailing line break', 'abc8Q~secret\n'],
      ['a leading space', ' abc8Q~secret'],
      ['a trailing no-break space', 'abc8Q~secret\u00a0'],
      ['a NUL', 'a\u0000b'],
      ['a DEL', 'a\u007fb'],
      ['a tab inside', 'abc\tdef'],
      ['an unpaired high surrogate', 'abc8Q~secret\ud800'],
      ['an unpaired low surrogate', '\udc00abc8Q~secret'],
      ['a leading zero-width space', '\u200babc8Q~secret'],
      ['a trailing word joiner', 'abc8Q~secret\u2060'],
      ['a zero-width space inside', 'abc8Q\u200b~secret'],
      ['a soft hyphen inside', 'abc8Q~sec\u00adret'],
      ['a trailing right-to-left mark', 'abc8Q~secret\u200f'],
    ].map(([kind, clientSecret]) => [
      `a secret with ${kind}`,
      defender({ clientSecret }),
      [{ field: 'defender.clientSecret', rule: CLIENT_SECRET_RULE }],
    ]),
    [
      'a poll interval below its range',
      defender({ pollIntervalMinutes: 9 }),
      [{ field: 'defender.pollIntervalMinutes', rule: 'must be a whole number from 10 to 1440' }],
    ],
    [
      'a poll interval above its range',
      defender({ pollIntervalMinutes: 1441 }),
      [{ field: 'defender.pollIntervalMinutes', rule: 'must be a whole number from 10 to 1440' }],
    ],
    ['an entry that is no object', 'acme', [{ field: '(message)', rule: 'must be an object' }]],
    ['a flag', defender({ enabled: 'yes' }), [{ field: 'defender.enabled', rule: 'must be true or false' }]],
  ])('should word the rule of %s, not the schema', (_case, value, violations) => {
    expect(checkMessage('urs/tenant-registration', value)).toEqual(violations);
  });

  it.each([
    ['inner spaces', 'abc 8Q~secret value'],
    ['letters beyond ASCII', 'Geheimnis~Schlüssel.ÆØÅ_秘密'],
    ['a character beyond the BMP (a surrogate pair)', 'abc8Q~secret😀'],
    ['a single character', 's'],
  ])('should accept a secret with %s', (_case, clientSecret) => {
    expect(checkMessage('urs/tenant-registration', defender({ clientSecret }))).toEqual([]);
  });

  it('should mark the alternatives of an anyOf, without its summary, and leave rules broken together unmarked', () => {
    expect(
      checkMessage('urs/tenant-registration', defender({ region: 7, pollIntervalMinutes: 9.5 })),
    ).toEqual([
      { field: 'defender.pollIntervalMinutes', rule: 'must be an integer' },
      { field: 'defender.pollIntervalMinutes', rule: 'must be a whole number from 10 to 1440' },
      {
        field: 'defender.region',
        rule: expect.stringMatching(/^must be one of /),
        alternative: '#/properties/defender/properties/region/anyOf/0',
      },
      {
        field: 'defender.region',
        rule: 'must be null',
        alternative: '#/properties/defender/properties/region/anyOf/1',
      },
    ]);
  });

  it('should word a minimum alone and a range of numbers', () => {
    expect(checkMessage('urs/registration-push', { ...push, generation: -1 })).toEqual([
      { field: 'generation', rule: 'must be a whole number from 0 to 9007199254740991' },
    ]);
    expect(() => validateMessage('urs/registration-push', { ...push, generation: -1 })).toThrow(
      'urs/registration-push: generation must be a whole number from 0 to 9007199254740991',
    );
    const batch = batchHeader({ cvssThreshold: 10.5 });
    expect(checkMessage('urs/device-batch', batch)).toEqual([
      { field: 'cvssThreshold', rule: 'must be a number from 0 to 10' },
    ]);
    expect(checkMessage('urs/device-batch', { ...batch, cvssThreshold: 9, batchIndex: -1 })).toEqual([
      { field: 'batchIndex', rule: 'must be at least 0' },
    ]);
  });

  it('should refuse a generation a JSON number cannot hold exactly, naming the field and its range', () => {
    const rule = 'must be a whole number from 0 to 9007199254740991';
    // Beyond 2^53 the parsed number is not the one sent: 9007199254740993 reads as 9007199254740992.
    for (const generation of ['9007199254740992', '9007199254740993', '18446744073709551615', '1e21']) {
      const parsed = JSON.parse(
        `{"schemaVersion": 1, "generation": ${generation}, "mode": "full", "tenants": []}`,
      ) as unknown;
      expect(checkMessage('urs/registration-push', parsed)).toEqual([{ field: 'generation', rule }]);
      expect(() => validateMessage('urs/registration-push', parsed)).toThrow(
        `urs/registration-push: generation ${rule}`,
      );
    }
    expect(checkMessage('urs/registration-push', { ...push, generation: Number.MAX_SAFE_INTEGER })).toEqual(
      [],
    );
  });

  it('should word a push of another schema version and a tenant list of the wrong kind', () => {
    expect(checkMessage('urs/registration-push', { ...push, schemaVersion: 2, tenants: {} })).toEqual([
      { field: 'schemaVersion', rule: 'must be 1' },
      { field: 'tenants', rule: 'must be an array' },
    ]);
    expect(() => validateMessage('urs/registration-push', { ...push, schemaVersion: 2 })).toThrow(
      'urs/registration-push: schemaVersion must be 1',
    );
  });

  it("should name the missing total of a last batch once, without the schema's if/then", () => {
    const batch = batchHeader({
      cycleStartedAt: 'yesterday',
      lastBatch: true,
      cvssThreshold: 9,
      totalDevices: 0,
    });
    expect(checkMessage('urs/device-batch', batch)).toEqual([
      { field: 'totalBatches', rule: 'is required' },
      { field: 'cycleStartedAt', rule: 'must be a date and time (RFC 3339, e.g. 2026-01-31T12:00:00Z)' },
    ]);
  });

  it('should have words for every pattern of every contract', () => {
    const patterns: string[] = [];
    const walk = (node: unknown): void => {
      if (node === null || typeof node !== 'object') return;
      const pattern = (node as { pattern?: unknown }).pattern;
      if (typeof pattern === 'string') patterns.push(pattern);
      Object.values(node).forEach(walk);
    };
    ALL_SCHEMAS.forEach(walk);
    expect(patterns.length).toBeGreaterThan(0);
    expect(patterns.filter((pattern) => !PATTERN_RULES.has(pattern))).toEqual([]);
  });
});

describe('compileContracts', () => {
  it('should compile the validators of every contract up front, and refuse a contract it does not know', () => {
    const all: ContractId[] = [
      'urs/tenant-registration',
      'urs/registration-push',
      'urs/tenant-record',
      'urs/device-batch',
      'urs/enriched-batch',
      'urs/score-batch',
      'urs/vms-risk-score',
      'urs/vms-risk-summary',
      'urs/dead-letter',
    ];
    expect(() => compileContracts(all)).not.toThrow();
    expect(() => compileContracts(['urs/no-such-contract' as ContractId])).toThrow(
      'no schema urs/no-such-contract',
    );
  });
});

describe('the vms.risk-scores record rules', () => {
  it("should be the record head's and, for the rest, a score batch device's (the publisher validates a batch's records by its first)", () => {
    const head = ['schemaVersion', 'tenantId', 'cycleId', 'computedAt'];
    const record = vmsRiskScoreSchema as unknown as {
      properties: Record<string, unknown>;
      required: string[];
      additionalProperties: unknown;
    };
    const item = scoreBatchSchema.properties.devices.items as unknown as typeof record;
    const deviceRules = Object.fromEntries(
      Object.entries(record.properties).filter(([name]) => !head.includes(name)),
    );
    expect(deviceRules).toEqual(item.properties);
    expect(Object.keys(record.properties).filter((name) => head.includes(name))).toEqual(head);
    // No member of the head is a device's: a device that met its rules carries none of them.
    expect(Object.keys(item.properties).filter((name) => head.includes(name))).toEqual([]);
    expect([...record.required].sort()).toEqual([...head, ...item.required].sort());
    expect([record.additionalProperties, item.additionalProperties]).toEqual([false, false]);
    // Nothing else constrains either but the same rules over a device as a whole (its band is its score's).
    expect(Object.keys(vmsRiskScoreSchema).sort()).toEqual([
      '$id',
      'additionalProperties',
      'allOf',
      'properties',
      'required',
      'type',
    ]);
    expect(Object.keys(item).sort()).toEqual([
      'additionalProperties',
      'allOf',
      'properties',
      'required',
      'type',
    ]);
    expect(vmsRiskScoreSchema.allOf).toEqual(scoreBatchSchema.properties.devices.items.allOf);
  });
});

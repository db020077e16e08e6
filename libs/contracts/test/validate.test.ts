import {
  checkMessage,
  compileContracts,
  type ContractId,
  validateMessage,
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

describe('validateMessage', () => {
  it('should accept a valid registration and return it typed', () => {
    expect(validateMessage('urs/tenant-registration', registration).tenantId).toBe('acme');
  });

  it('should name the field and the rule for a poll interval out of range', () => {
    const bad = { ...registration, defender: { ...registration.defender, pollIntervalMinutes: 5 } };
    expect(() => validateMessage('urs/tenant-registration', bad)).toThrow(
      'urs/tenant-registration: defender.pollIntervalMinutes must be >= 10',
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

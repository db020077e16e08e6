import {
  DEVICE_RECORD_FIELDS,
  toDeviceRecord,
  validateMessage,
  type DeviceBatch,
  type EnrichedBatch,
  type Machine,
} from '@urs/contracts';

/** A machine as `GET /api/machines` lists it (normalised keys), undocumented fields included. */
const fullMachine: Machine = {
  id: '1e5bc9d7e413ddd7902c2932e418702b84d0cc07',
  computerDnsName: 'mymachine1.contoso.com',
  firstSeen: '2018-08-02T14:55:03.7791856Z',
  lastSeen: '2026-01-21T09:12:44.1234567Z',
  osPlatform: 'Windows10',
  osVersion: null,
  osProcessor: 'x64',
  version: '1901',
  lastIpAddress: '172.17.230.209',
  lastExternalIpAddress: '167.220.196.71',
  agentVersion: '10.8760.19041.1000',
  osBuild: 18209,
  healthStatus: 'Active',
  deviceValue: 'Normal',
  rbacGroupId: 140,
  rbacGroupName: 'The-A-Team',
  riskScore: 'Low',
  exposureLevel: 'Medium',
  isAadJoined: true,
  aadDeviceId: '80fe8ff8-2624-418e-9591-41f0491218f9',
  machineTags: ['test tag 1', 'test tag 2'],
  defenderAvStatus: 'Updated',
  onboardingStatus: 'Onboarded',
  osArchitecture: '64-bit',
  managedBy: 'Intune',
  managedByStatus: 'Success',
  ipAddresses: [
    { ipAddress: '172.17.230.209', macAddress: '00155D83A2B1', type: 'Ethernet', operationalStatus: 'Up' },
  ],
  vmMetadata: { vmId: 'vm', cloudProvider: 'Azure', resourceId: '/subscriptions/x', subscriptionId: 's' },
  isExcluded: false,
  exclusionReason: null,
  mergedIntoMachineId: null,
  isPotentialDuplication: false,
};

const header = {
  schemaVersion: 1 as const,
  tenantId: 'acme',
  cycleId: 'acme-0001768989600000',
  cycleStartedAt: '2026-01-21T10:00:00.000Z',
  batchIndex: 0,
  lastBatch: true,
  totalBatches: 1,
  totalDevices: 1,
  vulnerabilityMode: 'per-device' as const,
};

describe('toDeviceRecord', () => {
  it('should keep exactly the id, the scoring inputs and the identity VMS needs, values unchanged', () => {
    const record = toDeviceRecord(fullMachine);
    expect(Object.keys(record).sort()).toEqual(
      [
        'id',
        'riskScore',
        'exposureLevel',
        'defenderAvStatus',
        'onboardingStatus',
        'healthStatus',
        'lastSeen',
        'firstSeen',
        'isExcluded',
        'computerDnsName',
        'aadDeviceId',
        'lastIpAddress',
        'lastExternalIpAddress',
        'ipAddresses',
        'machineTags',
        'rbacGroupName',
      ].sort(),
    );
    for (const field of DEVICE_RECORD_FIELDS) expect(record[field]).toBe(fullMachine[field]);
  });

  it('should leave a field the machine lacks absent, and keep a null as null', () => {
    const record = toDeviceRecord({ id: 'd1', lastSeen: null, riskScore: undefined, osPlatform: 'Linux' });
    expect(record).toEqual({ id: 'd1', lastSeen: null });
    expect(Object.keys(record)).toEqual(['id', 'lastSeen']);
  });

  it('should give the same record again when projecting a projection', () => {
    const record = toDeviceRecord(fullMachine);
    expect(toDeviceRecord(record)).toEqual(record);
  });
});

describe('device record schemas', () => {
  const deviceBatch = (devices: Machine[]): DeviceBatch => ({ ...header, cvssThreshold: 9, devices });
  const enrichedBatch = (machine: Machine): EnrichedBatch => ({
    ...header,
    collectedAt: '2026-01-21T10:00:05.000Z',
    devices: [{ machine, vulnerabilities: null, fetchError: { code: 'TIMEOUT', message: 'timed out' } }],
  });

  it('should accept the device record on urs.device-batches and urs.devices-enriched', () => {
    const record = toDeviceRecord(fullMachine);
    expect(validateMessage('urs/device-batch', deviceBatch([record])).devices).toEqual([record]);
    expect(validateMessage('urs/enriched-batch', enrichedBatch(record)).devices[0]?.machine).toEqual(record);
  });

  it('should accept the whole machine an older poller still sends during a rolling deploy', () => {
    expect(validateMessage('urs/device-batch', deviceBatch([fullMachine])).devices).toHaveLength(1);
    expect(validateMessage('urs/enriched-batch', enrichedBatch(fullMachine)).devices).toHaveLength(1);
  });

  it('should name the field of a scoring input with the wrong type', () => {
    const wrong = { ...toDeviceRecord(fullMachine), riskScore: 3 } as unknown as Machine;
    expect(() => validateMessage('urs/device-batch', deviceBatch([wrong]))).toThrow(/riskScore/);
    expect(() => validateMessage('urs/enriched-batch', enrichedBatch(wrong))).toThrow(/riskScore/);
  });

  it('should refuse a device record without an id', () => {
    const noId = { lastSeen: null } as unknown as Machine;
    expect(() => validateMessage('urs/device-batch', deviceBatch([noId]))).toThrow(/id/);
  });
});

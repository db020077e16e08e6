import {
  MISSING_REASONS,
  checkMessage,
  toDeviceRecord,
  vmsRecord,
  vmsRiskScoreSchema,
  type EnrichedDevice,
  type ScoredDevice,
  type Machine,
  type VulnerabilitySummary,
} from '@urs/contracts';
import { parseMachine } from '@urs/defender';
import { compileProfile, scoreDevice } from '@urs/scoring';
import { deviceRecordOf, toScoredDevice } from '../src/scored-device';

// The poller sends each device as its DeviceRecord, not the whole listed machine: these tests check that
// nothing downstream of it (the score, its explanation, the record VMS enforces on) can tell the two apart.

const CYCLE_START = '2026-01-21T10:00:00.000Z';

/** Values each field takes across the fleet: documented ones, other casings, unknown, null and absent. */
const VALUES: Record<string, readonly unknown[]> = {
  riskScore: ['None', 'Informational', 'Low', 'Medium', 'High', 'high', 'Unknown', null, undefined],
  exposureLevel: ['None', 'Low', 'Medium', 'High', 'MEDIUM', 'Unknown', null, undefined],
  defenderAvStatus: [
    'Updated',
    'NotUpdated',
    'Disabled',
    'NotReporting',
    'NotSupported',
    'Unknown',
    undefined,
  ],
  onboardingStatus: ['Onboarded', 'CanBeOnboarded', 'Unsupported', 'InsufficientInfo', 'Unknown', null],
  healthStatus: ['Active', 'Inactive', 'ImpairedCommunication', 'NoSensorData', 'Unknown', undefined],
  lastSeen: [
    '2026-01-21T09:59:59.1234567Z',
    '2026-01-19T08:00:00Z',
    '2026-01-15T10:00:00.000Z',
    '2026-01-08T00:00:00Z',
    '2025-11-30T10:00:00Z',
    '2026-02-01T00:00:00Z',
    null,
    undefined,
  ],
  aadDeviceId: ['80fe8ff8-2624-418e-9591-41f0491218f9', '', null, undefined],
  machineTags: [['vip', 'finance'], [], null, undefined],
  ipAddresses: [
    [{ ipAddress: '10.0.0.7', macAddress: '00155D83A2B1', type: 'Ethernet', operationalStatus: 'Up' }],
    [],
    null,
    undefined,
  ],
};

/** A deterministic spread of whole listed machines (everything `GET /api/machines` sends) over VALUES. */
function fleet(size: number): Machine[] {
  const machines: Machine[] = [];
  for (let i = 0; i < size; i++) {
    const raw: Record<string, unknown> = {
      id: `device-${i}`,
      computerDnsName: i % 7 === 0 ? null : `host-${i}.contoso.com`,
      firstSeen: '2024-05-02T14:55:03.7791856Z',
      osPlatform: 'Windows11',
      osProcessor: 'x64',
      version: '23H2',
      osBuild: 22631,
      lastIpAddress: `10.0.${i % 250}.7`,
      lastExternalIpAddress: i % 5 === 0 ? null : `167.220.${i % 250}.71`,
      agentVersion: '10.8760.22631.1000',
      deviceValue: 'High',
      rbacGroupId: 140 + (i % 3),
      rbacGroupName: i % 4 === 0 ? null : `group-${i % 3}`,
      isAadJoined: true,
      osArchitecture: '64-bit',
      managedBy: 'Intune',
      managedByStatus: 'Success',
      vmMetadata: null,
      isExcluded: i % 50 === 0,
      exclusionReason: null,
      mergedIntoMachineId: null,
      isPotentialDuplication: false,
    };
    Object.keys(VALUES).forEach((field, k) => {
      const values = VALUES[field] as readonly unknown[];
      // A different stride per field, so the combinations spread instead of moving in step.
      const value = values[Math.floor(i / (k + 1)) % values.length];
      if (value !== undefined) raw[field] = value;
    });
    // The listing's spellings vary (`onboardingstatus`, PascalCase): the poller normalises before projecting.
    if (i % 11 === 0) renameKey(raw, 'riskScore', 'RiskScore');
    if (i % 13 === 0) renameKey(raw, 'onboardingStatus', 'onboardingstatus');
    const parsed = parseMachine(raw);
    if (!parsed.ok) throw new Error(`fixture device-${i}: ${parsed.reason}`);
    machines.push(parsed.value as Machine);
  }
  return machines;
}

function renameKey(record: Record<string, unknown>, from: string, to: string): void {
  if (!(from in record)) return;
  record[to] = record[from];
  delete record[from];
}

function summary(i: number): VulnerabilitySummary | null {
  if (i % 9 === 0) return null;
  return {
    criticalCveCount: i % 6,
    totalCveCount: 10,
    maxCvss: 9.8,
    cvssThreshold: 9,
    topCveIds: ['CVE-2024-1'],
  };
}

/**
 * Why a device's vulnerabilities are null, across the fleet: each fetch error code a record keeps, one it does
 * not, none at all, and a count made at another CVSS threshold (`CVSS_THRESHOLD_CHANGED`, set by the handler).
 */
const NOT_FETCHED = [
  { code: 'EXCLUDED', message: 'm' },
  { code: 'NOT_IN_EXPORT_SNAPSHOT', message: 'm' },
  { code: 'DEFENDER_NOT_FOUND', message: 'm' },
  { code: 'DEFENDER_UNREADABLE_RECORDS', message: 'm' },
  { code: 'DEFENDER_UNAVAILABLE', message: 'm' },
  undefined,
  'other threshold',
] as const;

/** The scored device of the fleet's device `i`, its vulnerabilities missing one of the ways of NOT_FETCHED. */
function scoredOf(machine: Machine, i: number, profile: ReturnType<typeof compileProfile>): ScoredDevice {
  const vulnerabilities = summary(i);
  const notFetched = NOT_FETCHED[Math.floor(i / 9) % NOT_FETCHED.length];
  const fetchError = vulnerabilities === null && typeof notFetched === 'object' ? notFetched : undefined;
  const enriched: EnrichedDevice = { machine, vulnerabilities, ...(fetchError ? { fetchError } : {}) };
  const scored = toScoredDevice(enriched, scoreDevice(machine, vulnerabilities, profile, CYCLE_START));
  if (vulnerabilities === null && notFetched === 'other threshold') {
    scored.missingReasons = { ...scored.missingReasons, criticalCves: 'CVSS_THRESHOLD_CHANGED' };
  }
  return scored;
}

/** What the pipeline makes of one enriched device: the scored device, the VMS record, both as JSON. */
function downstream(enriched: EnrichedDevice, profile: ReturnType<typeof compileProfile>) {
  const result = scoreDevice(enriched.machine, enriched.vulnerabilities, profile, CYCLE_START);
  const scored = toScoredDevice(enriched, result);
  return { result, vms: JSON.stringify(vmsRecord('acme', 'acme-1', '2026-01-21T10:01:00.000Z', scored)) };
}

describe.each([
  ['the default profile', compileProfile(null)],
  ['assume-worst', compileProfile({ missingSignals: 'assume-worst' })],
])('a device record scored with %s', (_name, profile) => {
  const machines = fleet(3_000);

  it('should score as its whole machine and give the same VMS record', () => {
    machines.forEach((machine, i) => {
      const vulnerabilities = summary(i);
      const full = downstream({ machine, vulnerabilities }, profile);
      const slim = downstream({ machine: toDeviceRecord(machine), vulnerabilities }, profile);
      expect({ id: machine.id, ...slim.result }).toEqual({ id: machine.id, ...full.result });
      expect(slim.vms).toBe(full.vms);
    });
  });

  it('should spread the fixture over every band, complete and incomplete devices', () => {
    const results = machines.map((machine, i) => scoreDevice(machine, summary(i), profile, CYCLE_START));
    expect(new Set(results.map((r) => r.band)).size).toBe(5);
    expect(new Set(results.map((r) => r.score)).size).toBeGreaterThan(20);
    expect(results.some((r) => r.missing.length > 0)).toBe(true);
    expect(results.some((r) => r.missing.length === 0)).toBe(true);
  });

  it('should make records the published VMS schema and the score batch schema accept: every band, assumed points, every missing reason', () => {
    const devices = machines.map((machine, i) => scoredOf(machine, i, profile));
    const declared = Object.keys(vmsRiskScoreSchema.properties.contributions.items.properties);
    for (const device of devices) {
      const record = vmsRecord('acme', 'acme-1', '2026-01-21T10:01:00.000Z', device).value;
      expect({ deviceId: device.deviceId, violations: checkMessage('urs/vms-risk-score', record) }).toEqual({
        deviceId: device.deviceId,
        violations: [],
      });
      // Every member the scorer writes is one the schema declares (a model made from it has them all).
      for (const contribution of device.contributions)
        expect(declared).toEqual(expect.arrayContaining(Object.keys(contribution)));
    }
    const batch = {
      schemaVersion: 1,
      tenantId: 'acme',
      cycleId: 'acme-1',
      cycleStartedAt: CYCLE_START,
      batchIndex: 0,
      lastBatch: false,
      collectedAt: '2026-01-21T10:00:30.000Z',
      scoredAt: '2026-01-21T10:01:00.000Z',
      devices,
    };
    expect(checkMessage('urs/score-batch', batch)).toEqual([]);
    // The fleet covers what the schemas must take.
    expect(new Set(devices.map((device) => device.band)).size).toBe(5);
    const reasons = new Set(devices.flatMap((device) => Object.values(device.missingReasons ?? {})));
    expect([...reasons].sort()).toEqual([...MISSING_REASONS].sort());
    const assumed = devices.some((device) => device.contributions.some((c) => c.assumed === true));
    expect(assumed).toBe(profile.assumeWorst);
  });

  it('should score again from its scored device alone, with the same or other vulnerabilities', () => {
    machines.forEach((machine, i) => {
      const first = downstream({ machine, vulnerabilities: summary(i) }, profile);
      const stored = toScoredDevice({ machine, vulnerabilities: summary(i) }, first.result);
      const record = deviceRecordOf(stored);
      for (const vulnerabilities of [summary(i), summary(i + 1), summary(i + 3)]) {
        const again = downstream({ machine: record, vulnerabilities }, profile);
        const fresh = downstream({ machine, vulnerabilities }, profile);
        expect({ id: machine.id, ...again.result }).toEqual({ id: machine.id, ...fresh.result });
        expect(again.vms).toBe(fresh.vms);
      }
    });
  });
});

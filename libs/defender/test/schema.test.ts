import {
  parseMachine,
  parseSoftwareVulnerabilityRow,
  parseVulnerability,
  vulnerabilityFromRow,
} from '../src';
import { DEFAULT_PROFILE, parseTimestampMs, scoreDevice } from '@urs/scoring';

const ID = 'b9c2f1d0e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3';

describe('parseMachine', () => {
  it('parseMachine should normalise PascalCase and lower-case keys to the documented camelCase', () => {
    const result = parseMachine({
      Id: ID,
      ComputerDnsName: 'pc1.contoso.com',
      onboardingstatus: 'onboarded',
      HealthStatus: 'active',
      RiskScore: 'HIGH',
    });
    expect(result).toEqual({
      ok: true,
      value: {
        id: ID,
        computerDnsName: 'pc1.contoso.com',
        onboardingStatus: 'Onboarded',
        healthStatus: 'Active',
        riskScore: 'High',
      },
    });
  });

  it('parseMachine should give a record already in documented form the same value as its PascalCase form', () => {
    const documented = { id: ID, computerDnsName: 'pc1', healthStatus: 'active', machineTags: ['a'] };
    const pascal = { Id: ID, ComputerDnsName: 'pc1', HealthStatus: 'active', MachineTags: ['a'] };
    const expected = { id: ID, computerDnsName: 'pc1', healthStatus: 'Active', machineTags: ['a'] };
    expect(parseMachine(documented)).toEqual({ ok: true, value: expected });
    expect(parseMachine(pascal)).toEqual({ ok: true, value: expected });
    expect(parseMachine({ ...documented, '@odata.etag': 'x' })).toEqual({ ok: true, value: expected });
  });

  it('parseMachine should keep undocumented fields and unknown enum values as sent', () => {
    const result = parseMachine({
      id: ID,
      healthStatus: 'SomethingNew',
      vmMetadata: { vm_id: 'x' },
      FutureField: 1,
      '@odata.etag': 'w',
    });
    expect(result).toEqual({
      ok: true,
      value: { id: ID, healthStatus: 'SomethingNew', vmMetadata: { vm_id: 'x' }, futureField: 1 },
    });
  });

  it('parseMachine should accept rbacGroupId as a number or a string and a null osBuild', () => {
    expect(parseMachine({ id: ID, rbacGroupId: 140, osBuild: null }).ok).toBe(true);
    expect(parseMachine({ id: ID, rbacGroupId: '140', osBuild: 19045 }).ok).toBe(true);
  });

  it('parseMachine should normalise the keys of ipAddresses entries', () => {
    const result = parseMachine({
      id: ID,
      IpAddresses: [{ IpAddress: '10.0.0.1', MacAddress: null, Type: 'Ethernet', OperationalStatus: 'Up' }],
    });
    expect(result.ok && result.value.ipAddresses).toEqual([
      { ipAddress: '10.0.0.1', macAddress: null, type: 'Ethernet', operationalStatus: 'Up' },
    ]);
  });

  it.each([
    [{ computerDnsName: 'x' }, 'id must have required property'],
    [{ id: '' }, 'id must NOT have fewer than 1 characters'],
    [{ id: '../../etc' }, 'id must match pattern'],
    [{ id: ID, machineTags: 'tag' }, 'machineTags must be array,null'],
    [{ id: ID, isExcluded: 'yes' }, 'isExcluded must be boolean,null'],
  ])('parseMachine should reject %j naming the field', (record, reason) => {
    const result = parseMachine(record);
    expect(result.ok).toBe(false);
    expect(!result.ok && result.reason).toContain(reason);
  });

  it('parseMachine should keep a device whose scored signals come in an undocumented shape, the signal emptied or as text', () => {
    const result = parseMachine({
      id: ID,
      lastSeen: 'Unknown',
      firstSeen: 42,
      riskScore: 3,
      exposureLevel: true,
      healthStatus: { state: 'Active' },
      onboardingStatus: ['Onboarded'],
      defenderAvStatus: 'updated',
    });
    expect(result).toEqual({
      ok: true,
      value: {
        id: ID,
        lastSeen: null,
        firstSeen: null,
        riskScore: '3',
        exposureLevel: 'true',
        healthStatus: null,
        onboardingStatus: null,
        defenderAvStatus: 'Updated',
      },
    });
    for (const lastSeen of ['', 'yesterday', '2024-13-45T00:00:00Z'])
      expect(parseMachine({ id: ID, lastSeen })).toEqual({ ok: true, value: { id: ID, lastSeen: null } });
    const dated = '2024-05-01T10:20:30.1234567Z';
    expect(parseMachine({ id: ID, lastSeen: dated })).toEqual({
      ok: true,
      value: { id: ID, lastSeen: dated },
    });
  });

  it.each([1, 0, true, false])(
    'parseMachine should take an onboardingStatus of %j for missing, not for a value the model scores as NotOnboarded',
    (onboardingStatus) => {
      const result = parseMachine({ id: ID, onboardingStatus });
      expect(result).toEqual({ ok: true, value: { id: ID, onboardingStatus: null } });
      const device = result.ok ? result.value : {};
      const scored = scoreDevice(device, [], DEFAULT_PROFILE, '2024-05-02T00:00:00Z');
      expect(scored.missing).toContain('onboarding');
      expect(scored.score).toBe(scoreDevice({ id: ID }, [], DEFAULT_PROFILE, '2024-05-02T00:00:00Z').score);
    },
  );

  it.each([
    '2024-05-01T10:20:30+05',
    '2024-05-01T10:20:30,5Z',
    '2024-05-01 10:20:30Z',
    '0001-01-01T00:00:00Z',
  ])('parseMachine should keep a lastSeen and firstSeen of %s, which the model reads', (dated) => {
    expect(parseTimestampMs(dated)).not.toBeNaN();
    expect(parseMachine({ id: ID, lastSeen: dated, firstSeen: dated })).toEqual({
      ok: true,
      value: { id: ID, lastSeen: dated, firstSeen: dated },
    });
  });

  it.each(['Jan 8 2024', '2024-05-01T10:20:30.123+0500 UTC', '1 May 2024 10:20 GMT'])(
    'parseMachine should empty a lastSeen of %s, which the model cannot read',
    (dated) => {
      expect(parseTimestampMs(dated)).toBeNaN();
      expect(parseMachine({ id: ID, lastSeen: dated })).toEqual({
        ok: true,
        value: { id: ID, lastSeen: null },
      });
    },
  );

  it('parseMachine should reject what is not an object', () => {
    expect(parseMachine(null)).toEqual({ ok: false, reason: 'record is not an object' });
    expect(parseMachine([ID])).toEqual({ ok: false, reason: 'record is not an object' });
  });
});

describe('parseVulnerability', () => {
  it('parseVulnerability should normalise CveSupportability and EPSS and the severity case', () => {
    const result = parseVulnerability({
      id: 'CVE-2024-1',
      severity: 'critical',
      cvssV3: 9.8,
      CveSupportability: 'supported',
      EPSS: 0.5,
    });
    expect(result).toEqual({
      ok: true,
      value: {
        id: 'CVE-2024-1',
        severity: 'Critical',
        cvssV3: 9.8,
        cveSupportability: 'supported',
        epss: 0.5,
      },
    });
  });

  it('parseVulnerability should write the CVE id in upper case', () => {
    expect(parseVulnerability({ id: 'cve-2024-1234', cvssV3: 9.8 })).toEqual({
      ok: true,
      value: { id: 'CVE-2024-1234', cvssV3: 9.8 },
    });
  });

  it('parseVulnerability should keep a CVE whose unscored fields come in an undocumented shape, those fields null', () => {
    const result = parseVulnerability({
      id: 'CVE-2024-2',
      cvssV3: 9.8,
      name: 42,
      severity: ['Critical'],
      epss: '0.97',
      publicExploit: 'true',
      exploitVerified: 1,
      exploitInKit: {},
      exploitTypes: ['RemoteCodeExecution', 3],
      cvssVector: 7,
    });
    expect(result).toEqual({
      ok: true,
      value: {
        id: 'CVE-2024-2',
        cvssV3: 9.8,
        name: null,
        severity: null,
        epss: null,
        publicExploit: null,
        exploitVerified: null,
        exploitInKit: null,
        exploitTypes: null,
        cvssVector: 7,
      },
    });
    expect(
      parseVulnerability({ id: 'CVE-2024-3', cvssV3: 7.5, exploitTypes: 'PrivilegeEscalation' }),
    ).toEqual({
      ok: true,
      value: { id: 'CVE-2024-3', cvssV3: 7.5, exploitTypes: null },
    });
  });

  it('parseVulnerability should still reject a record without a CVE id', () => {
    expect(parseVulnerability({ cvssV3: 9.8, epss: 0.5 })).toEqual({
      ok: false,
      reason: "id must have required property 'id'",
    });
    expect(parseVulnerability({ id: 42, cvssV3: 9.8 }).ok).toBe(false);
  });

  it('parseVulnerability should reject a CVSS that is neither a number nor numeric text', () => {
    expect(parseVulnerability({ id: 'CVE-2024-1', cvssV3: 'high' })).toEqual({
      ok: false,
      reason: 'cvssV3 must be a number from 0 to 10, numeric text or null (got "high")',
    });
  });
});

describe('vulnerabilityFromRow', () => {
  it('vulnerabilityFromRow should map a bulk row to the per-device shape', () => {
    const parsed = parseSoftwareVulnerabilityRow({
      DeviceId: ID,
      cveId: 'CVE-2023-2',
      cvssScore: 7.5,
      vulnerabilitySeverityLevel: 'high',
      exploitabilityLevel: 'ExploitIsVerified',
    });
    expect(parsed.ok).toBe(true);
    expect(parsed.ok && vulnerabilityFromRow(parsed.value)).toEqual({
      id: 'CVE-2023-2',
      severity: 'High',
      cvssV3: 7.5,
      publicExploit: true,
      exploitVerified: true,
      exploitInKit: false,
    });
  });

  it('parseSoftwareVulnerabilityRow should read a cvssScore of numeric text as its number, and refuse other text', () => {
    expect(parseSoftwareVulnerabilityRow({ deviceId: 'd', cveId: 'CVE-1', cvssScore: '9.8' })).toMatchObject({
      ok: true,
      value: { cvssScore: 9.8 },
    });
    expect(parseSoftwareVulnerabilityRow({ deviceId: 'd', cveId: 'CVE-1', cvssScore: ' ' })).toMatchObject({
      ok: true,
      value: { cvssScore: null },
    });
    expect(parseSoftwareVulnerabilityRow({ deviceId: 'd', cveId: 'CVE-1', cvssScore: 'high' })).toEqual({
      ok: false,
      reason: 'cvssScore must be a number from 0 to 10, numeric text or null (got "high")',
    });
  });

  it('parseSoftwareVulnerabilityRow should keep a row whose unscored levels come in an undocumented shape', () => {
    const parsed = parseSoftwareVulnerabilityRow({
      deviceId: ID,
      cveId: 'CVE-2023-3',
      cvssScore: 9.1,
      vulnerabilitySeverityLevel: 4,
      exploitabilityLevel: { level: 'ExploitIsInKit' },
    });
    expect(parsed).toEqual({
      ok: true,
      value: {
        deviceId: ID,
        cveId: 'CVE-2023-3',
        cvssScore: 9.1,
        vulnerabilitySeverityLevel: null,
        exploitabilityLevel: null,
      },
    });
    expect(parsed.ok && vulnerabilityFromRow(parsed.value)).toEqual({
      id: 'CVE-2023-3',
      severity: null,
      cvssV3: 9.1,
    });
    // The score is read: text that is no number still refuses the row.
    expect(
      parseSoftwareVulnerabilityRow({ deviceId: ID, cveId: 'CVE-2023-3', cvssScore: 'critical' }).ok,
    ).toBe(false);
  });

  it('vulnerabilityFromRow should write the CVE id in upper case', () => {
    const parsed = parseSoftwareVulnerabilityRow({ deviceId: ID, cveId: 'cve-2024-1234', cvssScore: 9.8 });
    expect(parsed.ok && vulnerabilityFromRow(parsed.value)).toMatchObject({ id: 'CVE-2024-1234' });
  });

  it('vulnerabilityFromRow should drop rows without a CVE', () => {
    const parsed = parseSoftwareVulnerabilityRow({ deviceId: ID, cveId: null, softwareName: 'x' });
    expect(parsed.ok && vulnerabilityFromRow(parsed.value)).toBeUndefined();
  });
});

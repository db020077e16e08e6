import { BULK_NEXT_UNIT_MS, bulkNextUnitMs, parseBenchArgs, UsageError } from '../src/args';

describe('parseBenchArgs', () => {
  it('parseBenchArgs should give the defaults without flags', () => {
    const options = parseBenchArgs([]);
    expect(options.sizes).toEqual([1_000, 10_000, 100_000]);
    expect(options.latencyMs).toBe(50);
    expect(options.driver).toBe('auto');
    expect(options.redis).toBe('private');
    expect(options.internalRuns).toBe(3);
    expect(options.internalWarmup).toBe(20_000);
  });

  it('parseBenchArgs should read the warm-up cycle of the internal runs, 0 for none', () => {
    expect(parseBenchArgs(['--internal-warmup', '0']).internalWarmup).toBe(0);
    expect(parseBenchArgs(['--internal-warmup', '5000']).internalWarmup).toBe(5_000);
    expect(() => parseBenchArgs(['--internal-warmup', '-1'])).toThrow(/--internal-warmup/);
  });

  it('parseBenchArgs should read the internal-ceiling runs, at least one', () => {
    expect(parseBenchArgs(['--internal-runs', '5']).internalRuns).toBe(5);
    expect(() => parseBenchArgs(['--internal-runs', '0'])).toThrow(
      /--internal-runs must be a whole number ≥ 1/,
    );
  });

  it('parseBenchArgs should read a subset of sizes', () => {
    expect(parseBenchArgs(['--sizes', '1000,10_000']).sizes).toEqual([1_000, 10_000]);
  });

  it('parseBenchArgs should refuse bad values naming the flag', () => {
    expect(() => parseBenchArgs(['--sizes', '1000,abc'])).toThrow(UsageError);
    expect(parseBenchArgs(['--sizes', '0']).sizes).toEqual([]);
    expect(() => parseBenchArgs(['--sizes', '1000,abc'])).toThrow(/--sizes/);
    expect(() => parseBenchArgs(['--driver', 'magic'])).toThrow(/--driver must be one of/);
    expect(() => parseBenchArgs(['--nope'])).toThrow(UsageError);
  });

  it('parseBenchArgs should allow 0 to skip a scenario', () => {
    const options = parseBenchArgs([
      '--bulk-devices',
      '0',
      '--internal-devices',
      '0',
      '--cycle-tenants',
      '0',
    ]);
    expect([options.bulkDevices, options.internalDevices, options.cycleTenants]).toEqual([0, 0, 0]);
  });
});

describe('parseBenchArgs --bulk-next-changed', () => {
  it('parseBenchArgs should change 1 % of the bulk fleet by default, and take 0 for the same export again', () => {
    expect(parseBenchArgs([]).bulkNextChanged).toBe(1_000);
    expect(parseBenchArgs(['--bulk-devices', '20000']).bulkNextChanged).toBe(200);
    expect(parseBenchArgs(['--bulk-next-changed', '0']).bulkNextChanged).toBe(0);
    expect(() => parseBenchArgs(['--bulk-next-changed', '-5'])).toThrow(/--bulk-next-changed/);
  });
});

describe('parseBenchArgs --env', () => {
  it('parseBenchArgs should collect service variables', () => {
    expect(parseBenchArgs(['--env', 'URS_VULN_CONCURRENCY=20', '--env', 'URS_LOG_LEVEL=warn']).env).toEqual({
      URS_VULN_CONCURRENCY: '20',
      URS_LOG_LEVEL: 'warn',
    });
  });

  it('parseBenchArgs should refuse a variable without a value', () => {
    expect(() => parseBenchArgs(['--env', 'URS_VULN_CONCURRENCY'])).toThrow(/--env must be NAME=value/);
  });
});

describe('parseBenchArgs --replicas', () => {
  it('parseBenchArgs should read processes per stage, one each by default', () => {
    expect(parseBenchArgs([]).replicas).toEqual({});
    expect(parseBenchArgs(['--replicas', 'vuln-fetcher=2, scorer=3']).replicas).toEqual({
      'vuln-fetcher': 2,
      scorer: 3,
    });
  });

  it('parseBenchArgs should refuse the registrar, an unknown stage, a count out of 1–4 or a malformed pair', () => {
    expect(() => parseBenchArgs(['--replicas', 'registrar=2'])).toThrow(/--replicas must be one of/);
    expect(() => parseBenchArgs(['--replicas', 'fetcher=2'])).toThrow(/--replicas must be one of/);
    expect(() => parseBenchArgs(['--replicas', 'scorer=0'])).toThrow(/--replicas scorer must be 1 to 4/);
    expect(() => parseBenchArgs(['--replicas', 'scorer=5'])).toThrow(/--replicas scorer must be 1 to 4/);
    expect(() => parseBenchArgs(['--replicas', 'scorer'])).toThrow(/stage=count pairs/);
  });
});

describe('parseBenchArgs --bulk-same-cycles', () => {
  it('parseBenchArgs should measure one unchanged bulk cycle by default, none with 0', () => {
    expect(parseBenchArgs([]).bulkSameCycles).toBe(1);
    expect(parseBenchArgs(['--bulk-same-cycles', '0']).bulkSameCycles).toBe(0);
    expect(parseBenchArgs(['--bulk-same-cycles', '2']).bulkSameCycles).toBe(2);
    expect(() => parseBenchArgs(['--bulk-same-cycles', 'one'])).toThrow(/--bulk-same-cycles/);
  });
});

describe('parseBenchArgs export volume', () => {
  it("parseBenchArgs should leave the simulator's light export mix without the flags", () => {
    const options = parseBenchArgs([]);
    expect(options.exportRowsPerDevice).toBeUndefined();
    expect(options.exportSoftwareOnlyShare).toBeUndefined();
  });

  it('parseBenchArgs should read the rows per device and their share without a CVE', () => {
    const options = parseBenchArgs(['--export-rows-per-device', '57', '--export-software-only', '0.5']);
    expect(options.exportRowsPerDevice).toBe(57);
    expect(options.exportSoftwareOnlyShare).toBe(0.5);
    expect(parseBenchArgs(['--export-rows-per-device', '5.7']).exportRowsPerDevice).toBe(5.7);
    expect(() => parseBenchArgs(['--export-rows-per-device', '0'])).toThrow(/--export-rows-per-device/);
    expect(() => parseBenchArgs(['--export-rows-per-device', '2000'])).toThrow(/--export-rows-per-device/);
    expect(() => parseBenchArgs(['--export-software-only', '1'])).toThrow(/--export-software-only/);
    expect(() => parseBenchArgs(['--export-software-only', 'half'])).toThrow(/--export-software-only/);
  });
});

describe('bulkNextUnitMs', () => {
  it("bulkNextUnitMs should keep the 60 s interval for the simulator's light export", () => {
    expect(bulkNextUnitMs(parseBenchArgs([]))).toBe(BULK_NEXT_UNIT_MS);
    expect(bulkNextUnitMs(parseBenchArgs(['--bulk-devices', '50000']))).toBe(6_000);
  });

  it('bulkNextUnitMs should give a heavier export an interval its read fits in under the 30 calls a minute', () => {
    const options = parseBenchArgs([
      '--bulk-devices',
      '50000',
      '--export-rows-per-device',
      '57',
      '--export-software-only',
      '0.5',
    ]);
    // 57 pages of 50,000 rows: measured ~77 s under the quota, which a 60 s interval does not hold.
    const intervalMs = bulkNextUnitMs(options) * 10;
    expect(intervalMs).toBeGreaterThanOrEqual(1.5 * 77_000 + 30_000);
    expect(intervalMs).toBeLessThan(300_000);
    expect(bulkNextUnitMs({ ...options, env: { URS_BULK_PAGE_SIZE: '200000' } })).toBe(6_000);
    expect(bulkNextUnitMs({ ...options, env: { URS_POLL_INTERVAL_UNIT_MS: '9000' } })).toBe(9_000);
  });
});

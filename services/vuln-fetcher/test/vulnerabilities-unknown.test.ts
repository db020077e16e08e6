import type { DeviceBatch, EnrichedBatch } from '@urs/contracts';
import { DefenderError, DefenderErrorCode } from '@urs/defender';
import { Registry } from '@urs/telemetry';
import { batch, cve, message, setup } from './handler-support';

// Devices whose vulnerabilities Microsoft does not hold, or the bulk export's snapshot cannot hold yet:
// their criticalCves is missing (`vulnerabilities: null` with the reason), never 0 critical CVEs.

const bulkBatch = (devices: DeviceBatch['devices'], overrides: Partial<DeviceBatch> = {}): DeviceBatch =>
  batch({ vulnerabilityMode: 'bulk', devices, totalDevices: devices.length, ...overrides });

/** Each device's critical CVE count, or its fetch error's code when it has none. */
const outcome = (sent: EnrichedBatch | undefined): Record<string, number | string | undefined> =>
  Object.fromEntries(
    (sent?.devices ?? []).map((device) => [
      device.machine.id,
      device.vulnerabilities?.criticalCveCount ?? device.fetchError?.code,
    ]),
  );

/** `urs_vulnerability_fetches_total` of bulk mode, by outcome, the outcomes never counted left out. */
function bulkFetches(metrics: Registry): Record<string, number> {
  const fetches = metrics.counter('urs_vulnerability_fetches_total', '');
  const counted = ['ok', 'failed', 'not-held', 'not-in-snapshot'].map(
    (outcome) => [outcome, fetches.get({ mode: 'bulk', outcome })] as const,
  );
  return Object.fromEntries(counted.filter(([, count]) => count > 0));
}

describe('createEnrichHandler: vulnerabilities not held', () => {
  const fleet: DeviceBatch['devices'] = [
    { id: 'd1', onboardingStatus: 'Onboarded' },
    { id: 'd2', onboardingStatus: 'CanBeOnboarded' },
    { id: 'd3', onboardingStatus: 'Unsupported' },
    { id: 'd4', onboardingStatus: 'InsufficientInfo' },
    { id: 'd5', onboardingStatus: 'Onboarded', isExcluded: true },
    // A status that is missing: asked for, as an onboarded device.
    { id: 'd6' },
    { id: 'd7', onboardingStatus: 'onboarded', isExcluded: false },
    { id: 'd8', onboardingStatus: null },
  ];

  it('should not call for a device excluded from vulnerability management, and pass it on without vulnerabilities', async () => {
    const asked: string[] = [];
    const { handler, sent } = setup({
      machineVulnerabilities: async (id) => {
        asked.push(id);
        return [cve('CVE-1', 9.8)];
      },
    });
    await handler(message(batch({ devices: fleet, totalDevices: fleet.length })));
    // Not onboarded is no reason: a network device or one reached by an authenticated scan is assessed.
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3', 'd4', 'd6', 'd7', 'd8']);
    expect(outcome(sent[0])).toEqual({ d1: 1, d2: 1, d3: 1, d4: 1, d5: 'EXCLUDED', d6: 1, d7: 1, d8: 1 });
    expect(sent[0]?.devices[4]?.fetchError?.message).toMatch(/excluded from vulnerability management/);
  });

  it('should not take an export listing an excluded device for its observation', async () => {
    const metrics = new Registry({ processMetrics: false });
    const { handler, sent } = setup(
      {
        bulkVulnerabilities: async (onRow) => {
          onRow('d1', cve('CVE-1', 9.8));
          // A device without a sensor the export assesses (a network device): its CVEs count.
          onRow('d2', cve('CVE-2', 9.1));
          // Listed anyway: an excluded device's list is no observation.
          onRow('d5', undefined);
        },
      },
      { metrics },
    );
    await handler(message(bulkBatch(fleet)));
    expect(outcome(sent[0])).toEqual({
      d1: 1,
      d2: 1,
      d3: 0,
      d4: 0,
      d5: 'EXCLUDED',
      d6: 0,
      d7: 0,
      d8: 0,
    });
    // Counted as in per-device mode: the excluded device's vulnerabilities were not held, not fetched.
    expect(bulkFetches(metrics)).toEqual({ ok: 7, 'not-held': 1 });
  });

  it("should keep an excluded device not held when the bulk export fails, not give it the export's failure", async () => {
    const metrics = new Registry({ processMetrics: false });
    const { handler, sent } = setup(
      {
        bulkVulnerabilities: async () => {
          throw new DefenderError(DefenderErrorCode.MALFORMED_RESPONSE, 'the export answered garbage');
        },
      },
      { metrics },
    );
    await handler(message(bulkBatch(fleet)));
    const codes = outcome(sent[0]);
    expect(codes['d5']).toBe('EXCLUDED');
    expect(
      Object.entries(codes)
        .filter(([id]) => id !== 'd5')
        .map(([, code]) => code),
    ).toEqual(Array(7).fill(DefenderErrorCode.MALFORMED_RESPONSE));
    expect(bulkFetches(metrics)).toEqual({ failed: 7, 'not-held': 1 });
  });
});

describe("createEnrichHandler: devices newer than the bulk export's snapshot", () => {
  const devices: DeviceBatch['devices'] = [
    { id: 'd1', firstSeen: '2026-01-01T09:00:00Z' },
    // Absent from the export, known to its snapshot for over a day: no vulnerability.
    { id: 'd2', firstSeen: '2025-12-31T05:59:59.9999999Z' },
    // Onboarded after the snapshot was generated: not in it, whatever its vulnerabilities.
    { id: 'd3', firstSeen: '2026-01-01T06:00:00.1234567Z' },
    { id: 'd4' },
    { id: 'd5', firstSeen: null },
  ];
  const rows = async (onRow: (deviceId: string, row: ReturnType<typeof cve> | undefined) => void) => {
    onRow('d1', cve('CVE-1', 9.8));
  };

  it('should pass a device first seen after the snapshot it was absent from on without vulnerabilities', async () => {
    const metrics = new Registry({ processMetrics: false });
    const { handler, sent } = setup(
      {
        bulkVulnerabilities: rows,
        exportGeneratedTime: async () => '2026-01-01T06:00:00Z',
      },
      { metrics },
    );
    await handler(message(bulkBatch(devices.slice(0, 3), { lastBatch: false, totalBatches: undefined })));
    // A later batch of the cycle, enriched from the export stored in the cache: the same.
    await handler(message(bulkBatch(devices, { batchIndex: 1 })));
    expect(outcome(sent[0])).toEqual({ d1: 1, d2: 0, d3: 'NOT_IN_EXPORT_SNAPSHOT' });
    expect(outcome(sent[1])).toEqual({ d1: 1, d2: 0, d3: 'NOT_IN_EXPORT_SNAPSHOT', d4: 0, d5: 0 });
    expect(sent[1]?.devices[2]?.fetchError?.message).toContain(
      "first seen at 2026-01-01T06:00:00.1234567Z, after the bulk export's snapshot (of 2026-01-01T06:00:00Z) or less than 24 hours before it",
    );
    expect(bulkFetches(metrics)).toEqual({ ok: 6, 'not-in-snapshot': 2 });
  });

  it('should pass a device first seen less than a day before the snapshot it was absent from on without vulnerabilities: Microsoft may not have assessed it yet', async () => {
    const metrics = new Registry({ processMetrics: false });
    const { handler, sent } = setup(
      { bulkVulnerabilities: rows, exportGeneratedTime: async () => '2026-01-01T06:00:00Z' },
      { metrics },
    );
    const recent: DeviceBatch['devices'] = [
      { id: 'd1', firstSeen: '2025-12-01T00:00:00Z' },
      // A day and a second before the snapshot: assessed in it, so absent means no vulnerability.
      { id: 'n1', firstSeen: '2025-12-31T05:59:59Z' },
      // Onboarded two hours, or a second less than a day, before the snapshot: maybe not assessed in it.
      { id: 'n2', firstSeen: '2026-01-01T04:00:00Z' },
      { id: 'n3', firstSeen: '2025-12-31T06:00:01Z' },
    ];
    await handler(message(bulkBatch(recent)));
    expect(outcome(sent[0])).toEqual({
      d1: 1,
      n1: 0,
      n2: 'NOT_IN_EXPORT_SNAPSHOT',
      n3: 'NOT_IN_EXPORT_SNAPSHOT',
    });
    expect(sent[0]?.devices[2]?.fetchError?.message).toContain(
      "first seen at 2026-01-01T04:00:00Z, after the bulk export's snapshot (of 2026-01-01T06:00:00Z) or less than 24 hours before it",
    );
    expect(bulkFetches(metrics)).toEqual({ ok: 2, 'not-in-snapshot': 2 });
  });

  it('should take the oldest the snapshot can be when its generatedTime is not known', async () => {
    // The handler's clock reads 10:00:06 and on: the snapshot is no older than 03:00, a device first seen a day
    // before that is known to it.
    const { handler, sent } = setup({
      bulkVulnerabilities: rows,
      exportGeneratedTime: async () => {
        throw new Error('the Defender API could not be reached');
      },
    });
    const unknown: DeviceBatch['devices'] = [
      ...devices,
      { id: 'd6', firstSeen: '2025-12-31T02:59:00Z' },
      { id: 'd7', firstSeen: '2025-12-31T03:01:00Z' },
    ];
    await handler(message(bulkBatch(unknown)));
    expect(outcome(sent[0])).toMatchObject({
      d1: 1,
      d3: 'NOT_IN_EXPORT_SNAPSHOT',
      d6: 0,
      d7: 'NOT_IN_EXPORT_SNAPSHOT',
    });
    expect(sent[0]?.devices[6]?.fetchError?.message).toMatch(
      /snapshot \(generated no earlier than 2026-01-01T03:00/,
    );
  });
});

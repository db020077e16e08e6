import type { InboundMessage, Publisher } from '@urs/bus';
import {
  validateMessage,
  type EnrichedBatch,
  type ScoreBatch,
  type ScoredDevice,
  type TenantRecord,
} from '@urs/contracts';
import type { StoredScore } from '@urs/store';
import { silentLogger } from '@urs/logging';
import { Registry } from '@urs/telemetry';
import { compileProfile, parseProfile } from '@urs/scoring';
import { inboundMessage } from '@urs/testkit';
import { createScoreHandler } from '../src/handler';
import {
  bindCatchUpTimeout,
  createProfileCache,
  createTenantsHandler,
  heldWhileCatchingUp,
  registerProfileMetrics,
} from '../src/profiles';

function tenantRecord(
  tenantId: string,
  revision: number,
  riskProfile: Record<string, unknown> | null,
  enabled = true,
): TenantRecord {
  return {
    schemaVersion: 1,
    tenantId,
    revision,
    updatedAt: '2026-01-01T00:00:00.000Z',
    source: 'rest',
    enabled,
    defender: {
      azureTenantId: '00000000-0000-0000-0000-000000000001',
      clientId: '00000000-0000-0000-0000-000000000002',
      clientSecret: { alg: 'A256GCM', keyId: 'k1', iv: 'x', tag: 'x', ciphertext: 'x' },
      pollIntervalMinutes: 10,
      cloud: 'commercial',
      region: null,
      riskProfile,
    },
  };
}

const inbound = <T>(value: T | null, key: string | null = null): InboundMessage<T> =>
  inboundMessage(value, { key });

function enriched(overrides: Partial<EnrichedBatch> = {}): EnrichedBatch {
  return {
    schemaVersion: 1,
    tenantId: 't1',
    cycleId: 'c1',
    cycleStartedAt: '2026-01-21T10:00:00.000Z',
    batchIndex: 3,
    lastBatch: true,
    totalBatches: 4,
    totalDevices: 1502,
    vulnerabilityMode: 'per-device',
    collectedAt: '2026-01-21T10:00:30.000Z',
    devices: [
      {
        machine: {
          id: 'd1',
          computerDnsName: 'pc1.contoso.com',
          lastIpAddress: '10.0.0.1',
          machineTags: ['vip'],
          riskScore: 'High',
          exposureLevel: 'None',
          defenderAvStatus: 'Updated',
          onboardingStatus: 'Onboarded',
          healthStatus: 'Active',
          // 20 days before the cycle start: gt14d (100 operational points).
          lastSeen: '2026-01-01T09:00:00.1234567Z',
        },
        vulnerabilities: {
          criticalCveCount: 2,
          totalCveCount: 5,
          maxCvss: 9.8,
          cvssThreshold: 9,
          topCveIds: ['CVE-1', 'CVE-2'],
        },
      },
      {
        machine: { id: 'd2', lastSeen: '2026-01-21T09:00:00Z' },
        vulnerabilities: null,
        fetchError: { code: 'X', message: 'y' },
      },
    ],
    ...overrides,
  };
}

/**
 * `end`: the last offset of each partition of `urs.tenants` when the scorer started, for its profiles to
 * read before they are used from memory (default: the topic was empty).
 */
function setup(records: TenantRecord[] = [], end = new Map<number, bigint>()) {
  const sent: ScoreBatch[] = [];
  const sentJson: (string | Buffer | undefined)[] = [];
  const saved: {
    tenantId: string;
    cycle: { cycleId: string; correction?: boolean };
    devices: ScoredDevice[];
    deviceJson?: readonly (string | Buffer)[];
  }[] = [];
  /** The last score saved of each device, as the store would answer it. */
  const latest = new Map<string, StoredScore>();
  const publisher: Publisher = {
    send: async (_topic, _contract, messages) => {
      for (const m of messages) {
        sent.push(m.value as ScoreBatch);
        sentJson.push(m.json);
      }
    },
    sendRaw: async () => undefined,
    close: async () => undefined,
  };
  const stored = new Map(records.map((record) => [record.tenantId, record]));
  let storeReads = 0;
  const profiles = createProfileCache({
    tenants: {
      lookup: async (id) => {
        storeReads += 1;
        return { record: stored.get(id) ?? null, rebuilt: true };
      },
    },
    logger: silentLogger,
  });
  profiles.expectEnd(end);
  const metrics = new Registry({ processMetrics: false });
  const handler = createScoreHandler({
    profiles,
    scores: {
      saveScores: async (tenantId, cycle, devices, deviceJson, replaced) => {
        saved.push({ tenantId, cycle, devices, ...(deviceJson ? { deviceJson } : {}) });
        devices.forEach((device, index) => {
          const before = replaced?.[index];
          const stored = { tenantId, ...cycle, device, ...(before ? { replaced: before } : {}) };
          latest.set(device.deviceId, stored as unknown as StoredScore);
        });
        return { written: devices.length, skipped: [] };
      },
      getDeviceScores: async (_tenantId, deviceIds) =>
        deviceIds.flatMap((id) => (latest.has(id) ? [latest.get(id) as StoredScore] : [])),
    },
    publisher,
    topic: 'urs.device-scores',
    logger: silentLogger,
    metrics,
    now: () => new Date('2026-01-21T10:00:31.000Z'),
  });
  return {
    handler,
    metrics,
    profiles,
    sent,
    sentJson,
    saved,
    stored,
    storeReads: () => storeReads,
    tenantsHandler: createTenantsHandler(profiles),
  };
}

/** Three critical CVEs: they move d2 from Trustworthy to Low Risk. */
const threeCves = {
  criticalCveCount: 3,
  totalCveCount: 3,
  maxCvss: 9.8,
  cvssThreshold: 9,
  topCveIds: ['CVE-7', 'CVE-8', 'CVE-9'],
};

/** A correction batch of cycle c1 (after the poller's four batches) giving these devices `threeCves`. */
const correctionOf = (...deviceIds: string[]): EnrichedBatch =>
  enriched({
    batchIndex: 4,
    lastBatch: false,
    totalBatches: undefined,
    totalDevices: undefined,
    collectedAt: '2026-01-21T10:00:50.000Z',
    devices: [],
    corrections: deviceIds.map((deviceId) => ({ deviceId, vulnerabilities: threeCves })),
  });

describe('createScoreHandler', () => {
  it("should score a correction's devices again from their scores of the cycle, and say what they counted before", async () => {
    const { handler, sent, saved } = setup([tenantRecord('t1', 1, null)]);
    await handler(inbound(enriched()));
    const before = sent[0]?.devices[1] as ScoredDevice;
    // d9 was not scored in the cycle: left out.
    const correction = correctionOf('d2', 'd9');
    await handler(inbound(correction));
    const out = sent[1] as ScoreBatch;
    expect(out.devices.map((device) => device.deviceId)).toEqual(['d2']);
    expect(out.replaces).toEqual({ bands: { [before.band]: 1 }, incomplete: 1 });
    expect(saved[1]?.cycle.correction).toBe(true);
    // The same as scoring d2's machine record with the corrected vulnerabilities in a batch of its own.
    const d2 = enriched().devices[1] as EnrichedBatch['devices'][number];
    await handler(
      inbound(
        enriched({
          collectedAt: correction.collectedAt,
          devices: [{ machine: d2.machine, vulnerabilities: threeCves }],
        }),
      ),
    );
    expect(out.devices[0]).toEqual(sent[2]?.devices[0]);
    expect(out.devices[0]?.score).not.toBe(before.score);
  });

  it('should say the same of a correction handled again after its scores were stored', async () => {
    const { handler, sent } = setup([tenantRecord('t1', 1, null)]);
    await handler(inbound(enriched()));
    const before = sent[0]?.devices.map((device) => device.band) as string[];
    // d2 moves to another band: its stored score's band is no longer the band it counted in.
    const correction = correctionOf('d1', 'd2');
    await handler(inbound(correction));
    await handler(inbound(correction));
    const [first, again] = [sent[1], sent[2]] as [ScoreBatch, ScoreBatch];
    const counted: Record<string, number> = {};
    for (const band of before) counted[band] = (counted[band] ?? 0) + 1;
    expect(first.devices.map((device) => device.band)).not.toEqual(before);
    expect(first.replaces).toEqual({ bands: counted, incomplete: 1 });
    expect(again.replaces).toEqual(first.replaces);
    expect(again.devices).toEqual(first.devices);
  });

  it("should say why each missing signal is missing by a code, never the fetch error's text, and nothing when none is", async () => {
    const { handler, sent, saved } = setup([tenantRecord('t1', 1, null)]);
    const batch = enriched();
    const message = 'Microsoft said: device d2 of contoso.com could not be read (correlation 42)';
    (batch.devices[1] as EnrichedBatch['devices'][number]).fetchError = {
      code: 'DEFENDER_UNAVAILABLE',
      message,
    };
    await handler(inbound(batch));
    const out = validateMessage('urs/score-batch', sent[0]);
    const [d1, d2] = out.devices as [ScoredDevice, ScoredDevice];
    expect(d2.missing).toEqual([
      'riskScore',
      'exposureLevel',
      'avStatus',
      'onboarding',
      'healthStatus',
      'criticalCves',
    ]);
    expect(d2.missingReasons).toEqual({
      riskScore: 'NOT_REPORTED',
      exposureLevel: 'NOT_REPORTED',
      avStatus: 'NOT_REPORTED',
      onboarding: 'NOT_REPORTED',
      healthStatus: 'NOT_REPORTED',
      criticalCves: 'FETCH_FAILED',
    });
    // What the REST device answer reads: the stored score, with the same reasons.
    expect(saved[0]?.devices[1]?.missingReasons).toEqual(d2.missingReasons);
    expect(JSON.stringify(sent[0])).not.toContain('correlation');
    expect(d1.missing).toEqual([]);
    expect(Object.keys(d1)).not.toContain('missingReasons');
  });

  it('should count the scored devices by band, every device of the batch once', async () => {
    const { handler, metrics, sent } = setup([tenantRecord('t1', 1, null)]);
    const machine = (id: string, riskScore: string) => ({
      id,
      riskScore,
      exposureLevel: 'None',
      defenderAvStatus: 'Updated',
      onboardingStatus: 'Onboarded',
      healthStatus: 'Active',
      lastSeen: '2026-01-21T09:00:00Z',
    });
    const devices = ['High', 'None', 'High', 'Low', 'None', 'High'].map((risk, index) => ({
      machine: machine(`d${index}`, risk),
      vulnerabilities: null,
    }));
    await handler(inbound(enriched({ devices })));
    await handler(inbound(enriched({ devices: devices.slice(0, 2), batchIndex: 2, lastBatch: false })));
    const scored = metrics.counter('urs_devices_scored_total', 'Devices scored, by band.');
    const bands = sent.flatMap((batch) => batch.devices.map((device) => device.band));
    expect(bands).toHaveLength(8);
    const expected = new Map<string, number>();
    for (const band of bands) expected.set(band, (expected.get(band) ?? 0) + 1);
    expect(expected.size).toBeGreaterThan(1);
    for (const [band, count] of expected) expect(scored.get({ band })).toBe(count);
  });

  it('should serialise each device once: the stored and the emitted JSON are exactly the values', async () => {
    const { handler, sent, sentJson, saved } = setup([tenantRecord('t1', 1, null)]);
    await handler(inbound(enriched()));
    expect(JSON.parse(sentJson[0]?.toString() ?? '')).toEqual(sent[0]);
    // Each device's JSON as JSON.stringify makes it, one per line.
    expect(sentJson[0]?.toString().split('\n').slice(1, -1)).toEqual(
      sent[0]?.devices.map(
        (device, index, all) => JSON.stringify(device) + (index < all.length - 1 ? ',' : ''),
      ),
    );
    expect(saved[0]?.deviceJson?.map(String)).toEqual(
      saved[0]?.devices.map((device) => JSON.stringify(device)),
    );
  });

  it('should score with the tenant profile, age lastSeen against the cycle start, and keep the header', async () => {
    const { handler, sent, saved } = setup([tenantRecord('t1', 1, null)]);
    await handler(inbound(enriched()));
    const out = sent[0] as ScoreBatch;
    expect(out).toMatchObject({
      tenantId: 't1',
      cycleId: 'c1',
      batchIndex: 3,
      lastBatch: true,
      totalBatches: 4,
      totalDevices: 1502,
    });
    expect(out.scoredAt).toBe('2026-01-21T10:00:31.000Z');
    const [d1, d2] = out.devices as [ScoredDevice, ScoredDevice];
    // C = 100 (riskScore High); O = min(100, 100 gt14d + 50 for 2 CVEs) = 100: score 100.
    expect(d1).toMatchObject({
      deviceId: 'd1',
      score: 100,
      band: 'High Risk',
      criticalScore: 1,
      operationalScore: 1,
      missing: [],
    });
    expect(d1).toMatchObject({
      computerDnsName: 'pc1.contoso.com',
      lastIpAddress: '10.0.0.1',
      machineTags: ['vip'],
      aadDeviceId: null,
      ipAddresses: [],
    });
    expect(d1.contributions).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ signal: 'riskScore', value: 'High', points: 100 }),
        expect.objectContaining({ signal: 'inactivity', value: 'gt14d', points: 100 }),
        expect.objectContaining({ signal: 'criticalCves', value: 2, points: 50 }),
      ]),
    );
    expect(d1.signals['inactivity']).toEqual({ value: 20, at: '2026-01-01T09:00:00.1234567Z' });
    expect(d2.missing).toEqual(expect.arrayContaining(['riskScore', 'criticalCves']));
    expect(d2.vulnerabilities).toBeNull();
    expect(saved[0]?.devices).toEqual(out.devices);
  });

  it('should use a profile from urs.tenants and follow its changes', async () => {
    const { handler, sent, tenantsHandler } = setup();
    const heavy = { weights: { criticalRisk: 100, operational: 0 } };
    await tenantsHandler(inbound(tenantRecord('t1', 2, heavy)));
    await tenantsHandler(inbound(tenantRecord('t1', 1, null)));
    await handler(inbound(enriched()));
    expect(sent[0]?.devices[0]?.score).toBe(100);
    expect(sent[0]?.devices[1]?.score).toBe(0);
    // Deleted: its batches still on their way are dropped, not failed (and so not dead-lettered).
    await tenantsHandler(inbound<TenantRecord>(null, 't1'));
    await expect(handler(inbound(enriched()))).resolves.toBeUndefined();
    expect(sent).toHaveLength(1);
  });

  it("should score with the tenant store's latest profile while urs.tenants replays older revisions after a start", async () => {
    const heavy = (criticalRisk: number) => ({ weights: { criticalRisk, operational: 100 - criticalRisk } });
    const latest = compileProfile(parseProfile(heavy(100))).hash;
    // Revisions 1..3 still on the topic's active segment; the tenant store holds the latest, 3.
    const { handler, profiles, sent, stored, storeReads, tenantsHandler } = setup(
      [tenantRecord('t1', 3, heavy(100))],
      new Map([[0, 2n]]),
    );
    await tenantsHandler(inboundMessage(tenantRecord('t1', 1, heavy(0)), { offset: '0' }));
    await handler(inbound(enriched()));
    expect(sent[0]?.devices[0]?.profileHash).toBe(latest);
    await tenantsHandler(inboundMessage(tenantRecord('t1', 2, heavy(0)), { offset: '1' }));
    expect(profiles.caughtUp()).toBe(false);
    await tenantsHandler(inboundMessage(tenantRecord('t1', 3, heavy(100)), { offset: '2' }));
    expect(profiles.caughtUp()).toBe(true);
    // Read to its end: from memory, the store no longer asked.
    const reads = storeReads();
    stored.clear();
    await handler(inbound(enriched()));
    expect(sent[1]?.devices[0]?.profileHash).toBe(latest);
    expect(storeReads()).toBe(reads);
  });

  it('should score a cycle with the profile it started with while urs.tenants replays, though the tenant store holds a newer one', async () => {
    const weighted = (operational: number) => ({ weights: { criticalRisk: 100 - operational, operational } });
    const started = compileProfile(parseProfile(weighted(100)));
    // The tenant changed its profile during the cycle: the tenant store holds revision 2, memory revision 1.
    const { handler, sent, tenantsHandler } = setup(
      [tenantRecord('t1', 2, weighted(50))],
      new Map([[0, 1n]]),
    );
    await tenantsHandler(inboundMessage(tenantRecord('t1', 1, weighted(100)), { offset: '0' }));
    await handler(inbound(enriched({ profileHash: started.hash })));
    expect(sent[0]?.devices[0]?.profileHash).toBe(started.hash);
    // The next cycle, started with revision 2, is scored with the tenant store's.
    const next = compileProfile(parseProfile(weighted(50)));
    await handler(inbound(enriched({ cycleId: 'c2', profileHash: next.hash })));
    expect(sent[1]?.devices[0]?.profileHash).toBe(next.hash);
  });

  it("should hold a batch whose cycle's profile is neither in memory nor in the tenant store while urs.tenants replays, and score it with that profile once read", async () => {
    const at = (cvssThreshold: number, operational = 100) => ({
      weights: { criticalRisk: 100 - operational, operational },
      operational: { criticalCves: { cvssThreshold, pointsPerCve: 10, maxPoints: 100 } },
    });
    const started = compileProfile(parseProfile(at(9)));
    // The cycle started at 9; the tenant moved to 7 (and other weights) since: the tenant store holds that.
    const { handler, sent, saved, tenantsHandler } = setup(
      [tenantRecord('t1', 2, at(7, 50))],
      new Map([[0, 1n]]),
    );
    await expect(handler(inbound(enriched({ profileHash: started.hash })))).rejects.toMatchObject({
      code: 'PROFILE_NOT_READ_YET',
      canRetry: true,
      infrastructure: true,
    });
    expect(sent).toEqual([]);
    expect(saved).toEqual([]);
    // The revision the cycle started with is read: the batch, tried again, is scored with it.
    await tenantsHandler(inboundMessage(tenantRecord('t1', 1, at(9)), { offset: '0' }));
    await handler(inbound(enriched({ profileHash: started.hash })));
    expect(sent[0]?.devices[0]?.profileHash).toBe(started.hash);
    expect(sent[0]?.devices[0]?.contributions).toContainEqual(
      expect.objectContaining({ signal: 'criticalCves', value: 2, points: 20 }),
    );
  });

  it('should hold a batch of an earlier poller (no profileHash) counted at a threshold no profile read so far counts at, while urs.tenants replays', async () => {
    const at = (cvssThreshold: number) => ({
      weights: { criticalRisk: 0, operational: 100 },
      operational: { criticalCves: { cvssThreshold, pointsPerCve: 10, maxPoints: 100 } },
    });
    const { handler, sent, tenantsHandler } = setup([tenantRecord('t1', 2, at(7))], new Map([[0, 1n]]));
    // Counted at 9 (enriched()'s threshold).
    await expect(handler(inbound(enriched()))).rejects.toMatchObject({ code: 'PROFILE_NOT_READ_YET' });
    await tenantsHandler(inboundMessage(tenantRecord('t1', 1, at(9)), { offset: '0' }));
    await handler(inbound(enriched()));
    expect(sent[0]?.devices[0]?.profileHash).toBe(compileProfile(parseProfile(at(9))).hash);
  });

  it('should never score a count made at one CVSS threshold with a profile of another: once urs.tenants is read, a cycle whose profile is gone has criticalCves missing (CVSS_THRESHOLD_CHANGED)', async () => {
    const at = (cvssThreshold: number, operational = 100) => ({
      weights: { criticalRisk: 100 - operational, operational },
      operational: { criticalCves: { cvssThreshold, pointsPerCve: 10, maxPoints: 100 } },
    });
    // The profile the cycle started with, at 9, is no longer on urs.tenants (compacted away): only revision 2.
    const gone = compileProfile(parseProfile(at(9)));
    const latest = compileProfile(parseProfile(at(7, 50)));
    const { handler, metrics, sent, tenantsHandler } = setup(
      [tenantRecord('t1', 2, at(7, 50))],
      new Map([[0, 0n]]),
    );
    await tenantsHandler(inboundMessage(tenantRecord('t1', 2, at(7, 50)), { offset: '0' }));
    await handler(inbound(enriched({ profileHash: gone.hash })));
    const [d1, d2] = sent[0]?.devices ?? [];
    expect(d1?.profileHash).toBe(latest.hash);
    // Counted at 9, not at the profile's 7: not scored, said why, the count itself kept for VMS to read.
    expect(d1?.missing).toContain('criticalCves');
    expect(d1?.missingReasons).toEqual({ criticalCves: 'CVSS_THRESHOLD_CHANGED' });
    expect(d1?.contributions.map((contribution) => contribution.signal)).not.toContain('criticalCves');
    expect(d1?.signals['criticalCves']?.value).toBeNull();
    expect(d1?.vulnerabilities).toMatchObject({ criticalCveCount: 2, cvssThreshold: 9 });
    // A device whose vulnerabilities could not be fetched keeps its own reason.
    expect(d2?.missingReasons?.['criticalCves']).toBe('FETCH_FAILED');
    const counter = metrics.counter(
      'urs_scorer_cycle_profile_not_held_total',
      'Batches scored without the profile their cycle started with, by outcome.',
    );
    expect(counter.get({ outcome: 'cves_not_scored' })).toBe(1);
    validateMessage('urs/score-batch', sent[0]);
    // A batch counted at the profile's own threshold is scored as it was.
    const countedAtSeven = enriched({ profileHash: gone.hash });
    for (const device of countedAtSeven.devices) {
      if (device.vulnerabilities) device.vulnerabilities.cvssThreshold = 7;
    }
    await handler(inbound(countedAtSeven));
    expect(sent[1]?.devices[0]?.profileHash).toBe(latest.hash);
    expect(sent[1]?.devices[0]?.contributions).toContainEqual(
      expect.objectContaining({ signal: 'criticalCves', value: 2, points: 20 }),
    );
    expect(counter.get({ outcome: 'other_profile' })).toBe(1);
  });

  it("should score a cycle whose profile memory does not hold yet with the tenant store's newer record, once urs.tenants was read", async () => {
    const at = (cvssThreshold: number) => ({
      weights: { criticalRisk: 0, operational: 100 },
      operational: { criticalCves: { cvssThreshold, pointsPerCve: 10, maxPoints: 100 } },
    });
    const { handler, sent, tenantsHandler } = setup([tenantRecord('t1', 2, at(7))]);
    // Memory holds revision 1 (at 9): revision 2 (at 7), whose cycle this is, is not read from urs.tenants yet.
    await tenantsHandler(inbound(tenantRecord('t1', 1, at(9))));
    const next = compileProfile(parseProfile(at(7)));
    const countedAtSeven = enriched({ profileHash: next.hash });
    for (const device of countedAtSeven.devices) {
      if (device.vulnerabilities) device.vulnerabilities.cvssThreshold = 7;
    }
    await handler(inbound(countedAtSeven));
    expect(sent[0]?.devices[0]?.profileHash).toBe(next.hash);
    expect(sent[0]?.devices[0]?.contributions).toContainEqual(
      expect.objectContaining({ signal: 'criticalCves', value: 2, points: 20 }),
    );
  });

  it('should drop a batch of a tenant held in memory and gone from the tenant store while urs.tenants replays', async () => {
    const { handler, sent, tenantsHandler } = setup([], new Map([[0, 5n]]));
    // Its tombstone is further on the topic, not read yet; the registrar removed its record.
    await tenantsHandler(inbound(tenantRecord('t1', 1, null)));
    await expect(handler(inbound(enriched()))).resolves.toBeUndefined();
    expect(sent).toEqual([]);
  });

  it('should fail a batch of a tenant neither registered nor known deleted as TENANT_UNKNOWN', async () => {
    const { handler, saved } = setup();
    await expect(handler(inbound(enriched()))).rejects.toMatchObject({
      code: 'TENANT_UNKNOWN',
      canRetry: false,
    });
    expect(saved).toEqual([]);
  });

  it("should hold a batch of a tenant neither in memory nor in the tenant store while urs.tenants replays, and drop it once the tenant's tombstone is read", async () => {
    // Deleted while the batch waited: its record gone from the tenant store, its tombstone not read yet.
    const { handler, sent, saved, tenantsHandler } = setup([], new Map([[0, 5n]]));
    await expect(handler(inbound(enriched()))).rejects.toMatchObject({
      code: 'PROFILE_NOT_READ_YET',
      canRetry: true,
      infrastructure: true,
    });
    await tenantsHandler(inboundMessage<TenantRecord>(null, { key: 't1', offset: '5' }));
    await expect(handler(inbound(enriched()))).resolves.toBeUndefined();
    expect(sent).toEqual([]);
    expect(saved).toEqual([]);
  });

  it("should drop a batch held for its cycle's profile once its tenant is deleted while it waits: at once when memory holds the tenant, once its tombstone is read when not", async () => {
    const at = (cvssThreshold: number) => ({
      weights: { criticalRisk: 0, operational: 100 },
      operational: { criticalCves: { cvssThreshold, pointsPerCve: 10, maxPoints: 100 } },
    });
    // The cycle started with revision 2 (at 8), read neither into memory nor in the tenant store (revision 3).
    const started = compileProfile(parseProfile(at(8)));
    const held = setup([tenantRecord('t1', 3, at(7))], new Map([[0, 5n]]));
    await held.tenantsHandler(inboundMessage(tenantRecord('t1', 1, at(9)), { offset: '0' }));
    await expect(held.handler(inbound(enriched({ profileHash: started.hash })))).rejects.toMatchObject({
      code: 'PROFILE_NOT_READ_YET',
    });
    // Deleted while it waits: the registrar removed the record; the tombstone is further on, not read yet.
    held.stored.delete('t1');
    await expect(held.handler(inbound(enriched({ profileHash: started.hash })))).resolves.toBeUndefined();
    expect([held.sent, held.saved]).toEqual([[], []]);
    const dropped = (metrics: Registry) =>
      metrics.counter('urs_batches_of_deleted_tenants_total', 'unused').get();
    expect(dropped(held.metrics)).toBe(1);

    // Not in memory: held until the tombstone is read (the tenant might as well never have been registered).
    const unread = setup([tenantRecord('t1', 3, at(7))], new Map([[0, 5n]]));
    await expect(unread.handler(inbound(enriched({ profileHash: started.hash })))).rejects.toMatchObject({
      code: 'PROFILE_NOT_READ_YET',
    });
    unread.stored.delete('t1');
    await expect(unread.handler(inbound(enriched({ profileHash: started.hash })))).rejects.toMatchObject({
      code: 'PROFILE_NOT_READ_YET',
    });
    await unread.tenantsHandler(inboundMessage<TenantRecord>(null, { key: 't1', offset: '5' }));
    await expect(unread.handler(inbound(enriched({ profileHash: started.hash })))).resolves.toBeUndefined();
    expect([unread.sent, unread.saved]).toEqual([[], []]);
    expect(dropped(unread.metrics)).toBe(1);
  });

  it("should tell the runner a batch held for urs.tenants' read at the start is held while catching up (not against readiness), and no other failure", async () => {
    const { handler } = setup([], new Map([[0, 5n]]));
    const held = await handler(inbound(enriched())).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(held).toMatchObject({ code: 'PROFILE_NOT_READ_YET' });
    expect(heldWhileCatchingUp(held)).toBe(true);
    const caughtUp = setup();
    const unknown = await caughtUp.handler(inbound(enriched())).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(unknown).toMatchObject({ code: 'TENANT_UNKNOWN' });
    expect(heldWhileCatchingUp(unknown)).toBe(false);
    expect(heldWhileCatchingUp(new Error('ECONNRESET'))).toBe(false);
  });

  it('should fail a batch of a tenant neither registered nor known deleted as TENANT_UNKNOWN once urs.tenants was read to its end', async () => {
    const { handler, tenantsHandler } = setup([], new Map([[0, 0n]]));
    await expect(handler(inbound(enriched()))).rejects.toMatchObject({ code: 'PROFILE_NOT_READ_YET' });
    await tenantsHandler(inboundMessage(tenantRecord('t2', 1, null), { offset: '0' }));
    await expect(handler(inbound(enriched()))).rejects.toMatchObject({
      code: 'TENANT_UNKNOWN',
      canRetry: false,
    });
  });

  describe('with urs.tenants not read to its end in time (URS_SCORER_CATCHUP_TIMEOUT_MS)', () => {
    beforeEach(() => jest.useFakeTimers());
    afterEach(() => jest.useRealTimers());

    const at = (cvssThreshold: number) => ({
      weights: { criticalRisk: 0, operational: 100 },
      operational: { criticalCves: { cvssThreshold, pointsPerCve: 10, maxPoints: 100 } },
    });

    it("should stop waiting, and score a held batch with the fallback (never a count at another threshold's profile), logged and counted", async () => {
      // The read stalls at offset 3 of 5 (a record whose dead letter Kafka refuses).
      const { handler, metrics, profiles, sent } = setup([tenantRecord('t1', 2, at(7))], new Map([[0, 5n]]));
      const warnings: { message: string; fields?: Record<string, unknown> }[] = [];
      const logger = {
        ...silentLogger,
        warn: (message: string, fields?: Record<string, unknown>) => warnings.push({ message, fields }),
      };
      const started = compileProfile(parseProfile(at(9)));
      bindCatchUpTimeout(profiles, { timeoutMs: 30_000, logger, metrics });
      await expect(handler(inbound(enriched({ profileHash: started.hash })))).rejects.toMatchObject({
        code: 'PROFILE_NOT_READ_YET',
      });
      jest.advanceTimersByTime(29_999);
      expect(profiles.caughtUp()).toBe(false);
      jest.advanceTimersByTime(1);
      expect(profiles.caughtUp()).toBe(true);
      expect(warnings).toEqual([
        expect.objectContaining({ fields: expect.objectContaining({ partitionsBehind: 1 }) }),
      ]);
      expect(metrics.counter('urs_scorer_profiles_catchup_timeouts_total', 'unused').get()).toBe(1);
      // Counted at 9; the profile held counts at 7: criticalCves missing rather than scored at another threshold.
      await handler(inbound(enriched({ profileHash: started.hash })));
      expect(sent[0]?.devices[0]?.profileHash).toBe(compileProfile(parseProfile(at(7))).hash);
      expect(sent[0]?.devices[0]?.missingReasons).toEqual({ criticalCves: 'CVSS_THRESHOLD_CHANGED' });
    });

    it("should score a batch of an earlier poller (no profileHash) with the tenant store's current profile, not memory's older one, until the read does reach its end", async () => {
      const weighted = (operational: number) => ({
        weights: { criticalRisk: 100 - operational, operational },
        operational: { criticalCves: { cvssThreshold: 9, pointsPerCve: 10, maxPoints: 100 } },
      });
      const older = compileProfile(parseProfile(weighted(100)));
      const current = compileProfile(parseProfile(weighted(50)));
      // The read stalls after revision 1 (offset 0 of 5); the tenant store holds revision 2, the current one.
      const { handler, metrics, profiles, sent, stored, storeReads, tenantsHandler } = setup(
        [tenantRecord('t1', 2, weighted(50))],
        new Map([[0, 5n]]),
      );
      await tenantsHandler(inboundMessage(tenantRecord('t1', 1, weighted(100)), { offset: '0' }));
      bindCatchUpTimeout(profiles, { timeoutMs: 30_000, logger: silentLogger, metrics });
      jest.advanceTimersByTime(30_000);
      expect(profiles.caughtUp()).toBe(true);
      // Counted at 9, as both profiles count: the current one, not the latest memory read before the stall.
      await handler(inbound(enriched()));
      expect(sent[0]?.devices[0]?.profileHash).toBe(current.hash);
      // Without counts: the current one too.
      const uncounted = enriched();
      for (const device of uncounted.devices) device.vulnerabilities = null;
      await handler(inbound(uncounted));
      expect(sent[1]?.devices[0]?.profileHash).toBe(current.hash);
      // A batch with its cycle's profileHash held in memory is scored from memory, as before.
      const reads = storeReads();
      await handler(inbound(enriched({ profileHash: older.hash })));
      expect(sent[2]?.devices[0]?.profileHash).toBe(older.hash);
      expect(storeReads()).toBe(reads);
      // The read reaches its end after all: memory holds the current profile, the tenant store no longer asked.
      await tenantsHandler(inboundMessage(tenantRecord('t1', 2, weighted(50)), { offset: '5' }));
      stored.clear();
      await handler(inbound(enriched()));
      expect(sent[3]?.devices[0]?.profileHash).toBe(current.hash);
      expect(storeReads()).toBe(reads);
    });

    it('should drop a batch of an earlier poller (no profileHash) whose tenant is gone from the tenant store, its tombstone not read', async () => {
      const { handler, metrics, profiles, saved, sent, stored, tenantsHandler } = setup(
        [tenantRecord('t1', 1, at(9))],
        new Map([[0, 5n]]),
      );
      await tenantsHandler(inboundMessage(tenantRecord('t1', 1, at(9)), { offset: '0' }));
      bindCatchUpTimeout(profiles, { timeoutMs: 30_000, logger: silentLogger, metrics });
      jest.advanceTimersByTime(30_000);
      stored.delete('t1');
      await expect(handler(inbound(enriched()))).resolves.toBeUndefined();
      expect([sent, saved]).toEqual([[], []]);
    });

    it('should serve urs_scorer_profiles_catchup_timeouts_total at 0 from the start, before any timeout', () => {
      const { metrics, profiles } = setup([], new Map([[0, 5n]]));
      registerProfileMetrics(profiles, metrics);
      expect(metrics.expose()).toMatch(/^urs_scorer_profiles_catchup_timeouts_total 0$/m);
      bindCatchUpTimeout(profiles, { timeoutMs: 30_000, logger: silentLogger, metrics });
      jest.advanceTimersByTime(30_000);
      expect(metrics.expose()).toMatch(/^urs_scorer_profiles_catchup_timeouts_total 1$/m);
    });

    it('should serve urs_scorer_profiles_caught_up 0 once the wait was given up short of the end, and 1 once the read goes on to reach it', async () => {
      const { metrics, profiles, tenantsHandler } = setup([], new Map([[0, 5n]]));
      registerProfileMetrics(profiles, metrics);
      bindCatchUpTimeout(profiles, { timeoutMs: 30_000, logger: silentLogger, metrics });
      await tenantsHandler(inboundMessage(tenantRecord('t1', 1, at(9)), { offset: '3' }));
      expect(metrics.expose()).toMatch(/^urs_scorer_profiles_caught_up 0$/m);
      jest.advanceTimersByTime(30_000);
      // Batches are no longer held for the read, yet it did not reach its end.
      expect(profiles.caughtUp()).toBe(true);
      expect(metrics.expose()).toMatch(/^urs_scorer_profiles_caught_up 0$/m);
      // The reader goes on after the timeout: the record it was stuck behind is read at last.
      await tenantsHandler(inboundMessage(tenantRecord('t2', 1, at(9)), { offset: '5' }));
      expect(metrics.expose()).toMatch(/^urs_scorer_profiles_caught_up 1$/m);
    });

    it('should neither log nor count a read that reached its end in time, nor stop once cancelled', async () => {
      const { metrics, profiles, tenantsHandler } = setup([], new Map([[0, 0n]]));
      const warnings: string[] = [];
      const logger = { ...silentLogger, warn: (message: string) => warnings.push(message) };
      bindCatchUpTimeout(profiles, { timeoutMs: 30_000, logger, metrics });
      await tenantsHandler(inboundMessage(tenantRecord('t1', 1, at(9)), { offset: '0' }));
      jest.advanceTimersByTime(30_000);
      expect(warnings).toEqual([]);
      expect(metrics.counter('urs_scorer_profiles_catchup_timeouts_total', 'unused').get()).toBe(0);

      const stalled = setup([], new Map([[0, 5n]]));
      const cancel = bindCatchUpTimeout(stalled.profiles, {
        timeoutMs: 30_000,
        logger,
        metrics: stalled.metrics,
      });
      cancel();
      jest.advanceTimersByTime(60_000);
      expect(stalled.profiles.caughtUp()).toBe(false);
    });
  });

  it("should score a cycle whose tenant changed its CVSS threshold since the cycle's start with the profile its CVEs were counted for", async () => {
    const { handler, sent, tenantsHandler } = setup();
    const at = (cvssThreshold: number) => ({
      weights: { criticalRisk: 0, operational: 100 },
      operational: { criticalCves: { cvssThreshold, pointsPerCve: 10, maxPoints: 100 } },
    });
    const hashOf = (index: number) => sent[index]?.devices[0]?.profileHash;
    const profileAtNine = compileProfile(parseProfile(at(9)));
    const profileAtSeven = compileProfile(parseProfile(at(7)));
    await tenantsHandler(inbound(tenantRecord('t1', 1, at(9))));
    await handler(inbound(enriched()));
    // The tenant moves to 7 during a cycle counted at 9: its batches keep the profile of 9.
    await tenantsHandler(inbound(tenantRecord('t1', 2, at(7))));
    await handler(inbound(enriched()));
    expect(hashOf(0)).toBe(profileAtNine.hash);
    expect(hashOf(1)).toBe(hashOf(0));
    expect(sent[1]?.devices[0]?.contributions).toContainEqual(
      expect.objectContaining({ signal: 'criticalCves', value: 2, points: 20 }),
    );
    // A record that leaves the profile as it was does not forget the one before it.
    await tenantsHandler(inbound(tenantRecord('t1', 3, at(7))));
    await handler(inbound(enriched()));
    expect(hashOf(2)).toBe(hashOf(0));
    // The next cycle, counted at 7, is scored with the profile of 7.
    const countedAtSeven = enriched();
    for (const device of countedAtSeven.devices) {
      if (device.vulnerabilities) device.vulnerabilities.cvssThreshold = 7;
    }
    await handler(inbound(countedAtSeven));
    expect(sent).toHaveLength(4);
    expect(hashOf(3)).toBe(profileAtSeven.hash);
    expect(sent[3]?.devices[0]?.vulnerabilities?.cvssThreshold).toBe(7);
    expect(sent[3]?.devices[0]?.contributions).toContainEqual(
      expect.objectContaining({ signal: 'criticalCves', value: 2, points: 20 }),
    );
  });

  it('should score a cycle whose tenant changed only its weights since its start with the profile it started with', async () => {
    const { handler, sent, tenantsHandler } = setup();
    const operationalOnly = { weights: { criticalRisk: 0, operational: 100 } };
    const halfAndHalf = { weights: { criticalRisk: 50, operational: 50 } };
    const started = compileProfile(parseProfile(operationalOnly));
    const next = compileProfile(parseProfile(halfAndHalf));
    // No critical risk, 20 days unseen: its score is the operational weight's.
    const batchOf = (cycleId: string, profileHash: string) =>
      enriched({
        cycleId,
        profileHash,
        devices: [
          {
            machine: { id: 'd1', riskScore: 'None', exposureLevel: 'None', lastSeen: '2026-01-01T09:00:00Z' },
            vulnerabilities: { ...threeCves, criticalCveCount: 0, topCveIds: [] },
          },
        ],
      });
    const scored = (index: number) => sent[index]?.devices[0];
    await tenantsHandler(inbound(tenantRecord('t1', 1, operationalOnly)));
    await handler(inbound(batchOf('c1', started.hash)));
    // The tenant changes its weights during the cycle: the cycle's batches keep the profile it started with.
    await tenantsHandler(inbound(tenantRecord('t1', 2, halfAndHalf)));
    await handler(inbound(batchOf('c1', started.hash)));
    // The next cycle starts with the new profile.
    await handler(inbound(batchOf('c2', next.hash)));
    expect([0, 1, 2].map((index) => [scored(index)?.profileHash, scored(index)?.score])).toEqual([
      [started.hash, 100],
      [started.hash, 100],
      [next.hash, 50],
    ]);
  });

  it('should score a cycle counted at the threshold it started with by that profile, though the tenant changed its threshold and then its weights since', async () => {
    const { handler, sent, tenantsHandler } = setup();
    const profile = (cvssThreshold: number, operational: number) => ({
      weights: { criticalRisk: 100 - operational, operational },
      operational: { criticalCves: { cvssThreshold, pointsPerCve: 10, maxPoints: 100 } },
    });
    const started = compileProfile(parseProfile(profile(9, 100)));
    await tenantsHandler(inbound(tenantRecord('t1', 1, profile(9, 100))));
    await tenantsHandler(inbound(tenantRecord('t1', 2, profile(7, 100))));
    await tenantsHandler(inbound(tenantRecord('t1', 3, profile(7, 60))));
    await handler(inbound(enriched({ profileHash: started.hash })));
    // A batch of an older poller, without the profile's hash: the newest profile held that counts at 9.
    await handler(inbound(enriched()));
    for (const batch of sent) {
      expect(batch.devices[0]?.profileHash).toBe(started.hash);
      expect(batch.devices[0]?.contributions).toContainEqual(
        expect.objectContaining({ signal: 'criticalCves', value: 2, points: 20 }),
      );
    }
  });

  it("should hold a tenant's last 4 profiles: a cycle started before more changes than that is scored with the latest", async () => {
    const { handler, sent, stored, tenantsHandler } = setup();
    // Each record written to the tenant store, then to urs.tenants, as the registrar does.
    const change = async (record: TenantRecord) => {
      stored.set(record.tenantId, record);
      await tenantsHandler(inbound(record));
    };
    const weighted = (operational: number) => ({ weights: { criticalRisk: 100 - operational, operational } });
    const started = compileProfile(parseProfile(weighted(100)));
    await change(tenantRecord('t1', 1, weighted(100)));
    for (const [revision, operational] of [90, 80, 70].entries()) {
      await change(tenantRecord('t1', revision + 2, weighted(operational)));
    }
    await handler(inbound(enriched({ profileHash: started.hash })));
    await change(tenantRecord('t1', 5, weighted(60)));
    await handler(inbound(enriched({ profileHash: started.hash })));
    expect(sent.map((batch) => batch.devices[0]?.profileHash)).toEqual([
      started.hash,
      compileProfile(parseProfile(weighted(60))).hash,
    ]);
  });

  it("should score a bulk cycle's correction batch, counted at the threshold the cycle started with, with that profile", async () => {
    const { handler, sent, tenantsHandler } = setup();
    const at = (cvssThreshold: number) => ({
      weights: { criticalRisk: 0, operational: 100 },
      operational: { criticalCves: { cvssThreshold, pointsPerCve: 10, maxPoints: 100 } },
    });
    await tenantsHandler(inbound(tenantRecord('t1', 1, at(9))));
    await handler(inbound(enriched()));
    // The tenant moves to 7 while the cycle's export is read; its corrections were counted at 9.
    await tenantsHandler(inbound(tenantRecord('t1', 2, at(7))));
    await handler(inbound(correctionOf('d2')));
    const corrected = sent[1]?.devices[0];
    expect(corrected?.deviceId).toBe('d2');
    expect(corrected?.profileHash).toBe(sent[0]?.devices[0]?.profileHash);
    expect(corrected?.contributions).toContainEqual(
      expect.objectContaining({ signal: 'criticalCves', value: 3, points: 30 }),
    );
  });

  it("should score a correction to no vulnerabilities with criticalCves missing, beside the batch's other corrections", async () => {
    const { handler, sent } = setup([tenantRecord('t1', 1, null)]);
    await handler(inbound(enriched()));
    const correction = correctionOf('d1', 'd2');
    const unreadable = { code: 'DEFENDER_UNREADABLE_RECORDS', message: 'no row of the device could be read' };
    correction.corrections = [
      { deviceId: 'd2', vulnerabilities: null, fetchError: unreadable },
      ...(correction.corrections ?? []).filter((item) => item.deviceId === 'd1'),
    ];
    await handler(inbound(correction));
    const [d2, d1] = (sent[1] as ScoreBatch).devices as [ScoredDevice, ScoredDevice];
    expect(d2.deviceId).toBe('d2');
    expect(d2.missing).toContain('criticalCves');
    // Why, from the correction's own fetch error (the batch scored it as failed to fetch before).
    expect(d2.missingReasons?.['criticalCves']).toBe('DEFENDER_UNREADABLE_RECORDS');
    expect(d1.missing).not.toContain('criticalCves');
    expect(d1.contributions).toContainEqual(expect.objectContaining({ signal: 'criticalCves', value: 3 }));
  });

  it('createProfileCache should drop a disabled tenant and read an unknown one from the tenant store', async () => {
    const { profiles, tenantsHandler } = setup([tenantRecord('t2', 1, { missingSignals: 'assume-worst' })]);
    await tenantsHandler(inbound(tenantRecord('t1', 1, null)));
    expect(profiles.size()).toBe(1);
    await tenantsHandler(inbound(tenantRecord('t1', 2, null, false)));
    expect(profiles.size()).toBe(0);
    expect((await profiles.get('t2'))?.assumeWorst).toBe(true);
  });
});

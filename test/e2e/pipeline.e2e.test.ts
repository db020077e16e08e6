import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { VmsRiskScore, VmsRiskSummary } from '@urs/contracts';
import { startSimulator, type Simulator } from '@urs/simulator';
import { createCycleStore } from '@urs/store';
import { waitFor } from '@urs/testkit';
import { criticalCves, expectedScore, isScored, type Expected } from './support/expected';
import { Pipeline } from './support/pipeline';
import { SERVICES } from './support/services';

// One pipeline for the whole file (starting five processes is the expensive part): the tests run in
// order and each waits for the next cycle it needs. One "minute" of pollIntervalMinutes is 2 s here, so
// the 10-minute interval of the registrations is a 20 s cycle.
const INTERVAL_UNIT_MS = 2_000;
const INTERVAL_MS = 10 * INTERVAL_UNIT_MS;
const CYCLE_WAIT_MS = 4 * INTERVAL_MS;

interface TenantFixture {
  tenantId: string;
  azureTenantId: string;
  clientId: string;
  secret: string;
  size: number;
}

const fixture = (tenantId: string, size: number): TenantFixture => ({
  tenantId,
  azureTenantId: randomUUID(),
  clientId: randomUUID(),
  secret: `${tenantId}-${randomUUID()}`,
  size,
});

const big = fixture('fleet-2000', 2000);
const empty = fixture('fleet-empty', 0);
const wrong = fixture('wrong-secret', 5);

describe('the pipeline end to end', () => {
  let sim: Simulator;
  let pipeline: Pipeline;
  const registeredAt = new Map<string, number>();

  const summaries = (tenantId: string): VmsRiskSummary[] =>
    pipeline.watch
      .of<VmsRiskSummary>(pipeline.topics.vmsRiskSummary)
      .map((record) => record.value)
      .filter((summary) => summary.tenantId === tenantId);

  /**
   * The first complete summary of a cycle that started after `afterMs`, once the watch has also read every
   * device record produced before it (VMS reads the two topics with no order between them).
   */
  const nextComplete = async (tenantId: string, afterMs: number): Promise<VmsRiskSummary> => {
    const summary = await waitFor(
      () =>
        summaries(tenantId).find(
          (summary) => summary.status === 'complete' && Date.parse(summary.cycleStartedAt) > afterMs,
        ),
      { timeoutMs: CYCLE_WAIT_MS, intervalMs: 200, description: `a complete cycle of ${tenantId}` },
    );
    await pipeline.watch.caughtUp(pipeline.topics.vmsRiskScores);
    return summary;
  };

  /** What the test expects of every scored device of the big tenant for a cycle started at `cycleStartMs`. */
  const expectedFleet = (cycleStartMs: number): Map<string, Expected> => {
    const expected = new Map<string, Expected>();
    for (const machine of sim.machines(big.azureTenantId)) {
      if (!isScored(machine as Record<string, unknown>)) continue;
      const cves = criticalCves(sim.vulnerabilities(big.azureTenantId, machine.id));
      expected.set(machine.id, expectedScore(machine as Record<string, unknown>, cves, cycleStartMs));
    }
    return expected;
  };

  /** A record's inactivity level, as its explanation gives it. */
  const inactivityOf = (record: VmsRiskScore | null | undefined): unknown =>
    record?.contributions.find((contribution) => contribution.signal === 'inactivity')?.value ?? null;

  const scoresOf = (tenantId: string, cycleId?: string): (VmsRiskScore | null)[] =>
    pipeline.watch
      .of<VmsRiskScore | null>(pipeline.topics.vmsRiskScores)
      .filter((record) => record.key?.startsWith(`${tenantId}/`))
      .map((record) => record.value)
      .filter((value) => cycleId === undefined || value?.cycleId === cycleId);

  beforeAll(async () => {
    sim = await startSimulator({});
    for (const tenant of [big, empty, wrong]) {
      sim.addTenant({
        azureTenantId: tenant.azureTenantId,
        apps: [{ clientId: tenant.clientId, clientSecret: tenant.secret }],
        fleet: { size: tenant.size },
      });
    }
    pipeline = new Pipeline({
      sim,
      env: {
        URS_POLL_INTERVAL_UNIT_MS: String(INTERVAL_UNIT_MS),
        URS_POLL_BATCH_SIZE: '200',
        URS_LOG_LEVEL: 'info',
      },
      serviceEnv: {
        publisher: { URS_TOMBSTONE_AFTER_CYCLES: '1', URS_DEADLINE_SWEEP_MS: '500' },
        scorer: { URS_CONSUMER_SESSION_TIMEOUT_MS: '6000', URS_SCORE_HISTORY_CYCLES: '1' },
      },
    });
    await pipeline.start();
    for (const tenant of [big, empty, wrong]) {
      const answer = await pipeline.api('PUT', `/v1/tenants/${tenant.tenantId}/defender`, {
        enabled: true,
        azureTenantId: tenant.azureTenantId,
        clientId: tenant.clientId,
        clientSecret: tenant === wrong ? 'not-the-secret' : tenant.secret,
        pollIntervalMinutes: 10,
      });
      expect(answer.status).toBe(201);
      registeredAt.set(tenant.tenantId, Date.now());
    }
  });

  afterAll(async () => {
    await pipeline?.stop();
    await sim?.close();
  });

  it('vms.risk-scores should hold exactly the independently computed scores and vms.risk-summary the right counts', async () => {
    const summary = await nextComplete(big.tenantId, 0);
    const expected = expectedFleet(Date.parse(summary.cycleStartedAt));

    const latest = pipeline.watch.latest<VmsRiskScore>(pipeline.topics.vmsRiskScores);
    const published = new Map(
      [...latest]
        .filter(([key]) => key.startsWith(`${big.tenantId}/`))
        .map(([key, value]) => [key.slice(big.tenantId.length + 1), value]),
    );
    expect([...published.keys()].sort()).toEqual([...expected.keys()].sort());
    const mismatches = [...expected].filter(([id, want]) => {
      const got = published.get(id);
      return (
        got?.score !== want.score ||
        got.band !== want.band ||
        inactivityOf(got) !== want.inactivity ||
        !isDeepStrictEqual(got.missingReasons, want.missingReasons)
      );
    });
    expect(mismatches).toEqual([]);
    for (const record of published.values()) {
      expect(record).toMatchObject({ tenantId: big.tenantId, cycleId: summary.cycleId });
    }

    const bands: Record<string, number> = {
      Trustworthy: 0,
      'Low Risk': 0,
      'Moderate Risk': 0,
      Suspicious: 0,
      'High Risk': 0,
    };
    for (const want of expected.values()) bands[want.band] = (bands[want.band] ?? 0) + 1;
    const incomplete = [...expected.values()].filter((want) => want.incomplete).length;
    expect(summary).toMatchObject({
      status: 'complete',
      devices: { total: expected.size, scored: expected.size, incomplete, failed: 0 },
      bands,
      published: { changed: expected.size, tombstones: 0 },
    });

    const emptySummary = await nextComplete(empty.tenantId, 0);
    expect(emptySummary.devices).toEqual({ total: 0, scored: 0, incomplete: 0, failed: 0 });
    expect(scoresOf(empty.tenantId)).toEqual([]);

    // The REST view of one device: its score with the explanation.
    const [deviceId, want] = [...expected][0] as [string, Expected];
    const device = await pipeline.api('GET', `/v1/tenants/${big.tenantId}/devices/${deviceId}`);
    expect(device.status).toBe(200);
    expect(device.body).toMatchObject({
      deviceId,
      score: want.score,
      band: want.band,
      cycleId: summary.cycleId,
    });
    expect(Array.isArray(device.body.contributions)).toBe(true);
    const high = await pipeline.api('GET', `/v1/tenants/${big.tenantId}/devices?band=High%20Risk`);
    expect(high.body.total).toBe(bands['High Risk']);
  });

  it("the wrong-secret tenant's status should name the problem, and the other tenants should not wait for it", async () => {
    const status = await waitFor(
      async () => {
        const answer = await pipeline.api('GET', `/v1/tenants/${wrong.tenantId}/defender`);
        return answer.body?.status?.state === 'error' ? answer.body.status : undefined;
      },
      {
        timeoutMs: CYCLE_WAIT_MS,
        intervalMs: 250,
        description: 'an error status of the wrong-secret tenant',
      },
    );
    expect(status.lastErrorCode).toBe('DEFENDER_INVALID_SECRET');
    expect(status.lastErrorMessage).toMatch(/secret/i);
    expect(JSON.stringify(status)).not.toContain('not-the-secret');
    expect(summaries(wrong.tenantId).filter((summary) => summary.status === 'complete')).toEqual([]);
    // Each healthy tenant's first cycle started within its first interval of its registration.
    for (const tenant of [big, empty]) {
      const first = summaries(tenant.tenantId)[0] as VmsRiskSummary;
      expect(Date.parse(first.cycleStartedAt) - (registeredAt.get(tenant.tenantId) as number)).toBeLessThan(
        INTERVAL_MS,
      );
    }
  });

  it('a device changed in the simulator should show its new score after the next cycle, and unchanged devices should not be republished', async () => {
    const before = pipeline.watch.latest<VmsRiskScore>(pipeline.topics.vmsRiskScores);
    const current = (id: string): VmsRiskScore | null | undefined => before.get(`${big.tenantId}/${id}`);
    const candidates = sim
      .machines(big.azureTenantId)
      .filter((machine) => isScored(machine as Record<string, unknown>));
    const changed = candidates.find((machine) => (current(machine.id)?.score ?? 100) < 50) as { id: string };
    const removed = candidates.find((machine) => machine.id !== changed.id) as { id: string };
    const changedAt = Date.now();
    // A device last seen in another inactivity level at an equal score (its operational points stay at
    // 100): its explanation changed, so VMS is sent it again. An hour clear of a day boundary.
    const relevelled = candidates
      .filter((machine) => machine.id !== changed.id && machine.id !== removed.id)
      .flatMap((machine) => {
        const record = machine as Record<string, unknown>;
        const cves = criticalCves(sim.vulnerabilities(big.azureTenantId, machine.id));
        const was = expectedScore(record, cves, changedAt);
        return [2, 5, 10, 20]
          .map((days) => new Date(changedAt - days * 86_400_000 - 3_600_000).toISOString())
          .filter((lastSeen) => {
            const now = expectedScore({ ...record, lastSeen }, cves, changedAt);
            return now.score === was.score && now.inactivity !== was.inactivity;
          })
          .map((lastSeen) => ({ id: machine.id, lastSeen }));
      })[0] as { id: string; lastSeen: string };
    expect(relevelled).toBeDefined();
    sim.updateMachine(big.azureTenantId, changed.id, {
      riskScore: 'High',
      exposureLevel: 'High',
      healthStatus: 'Inactive',
    });
    sim.updateMachine(big.azureTenantId, relevelled.id, { lastSeen: relevelled.lastSeen });
    sim.removeMachine(big.azureTenantId, removed.id);

    const summary = await nextComplete(big.tenantId, changedAt);
    const expected = expectedFleet(Date.parse(summary.cycleStartedAt));
    const republished = new Map(
      scoresOf(big.tenantId, summary.cycleId).map((record) => [
        (record as VmsRiskScore).deviceId,
        record as VmsRiskScore,
      ]),
    );
    // What VMS held when this cycle began publishing: every record that came before the cycle's first.
    const all = pipeline.watch.of<VmsRiskScore | null>(pipeline.topics.vmsRiskScores);
    const firstOfCycle = all.findIndex((record) => record.value?.cycleId === summary.cycleId);
    const held = new Map(
      all.slice(0, firstOfCycle < 0 ? all.length : firstOfCycle).map((r) => [r.key, r.value]),
    );
    const heldOf = (id: string): VmsRiskScore | null | undefined => held.get(`${big.tenantId}/${id}`);
    // Exactly the devices whose score, band or inactivity level differs from what VMS held (the changed
    // one, and any device whose inactivity crossed a day boundary since the last cycle, at equal score
    // too: its explanation changed).
    const shouldChange = [...expected]
      .filter(([id, want]) => {
        const got = heldOf(id);
        return got?.score !== want.score || got.band !== want.band || inactivityOf(got) !== want.inactivity;
      })
      .map(([id]) => id)
      .sort();
    expect(shouldChange).toContain(changed.id);
    expect(shouldChange).toContain(relevelled.id);
    expect(republished.get(relevelled.id)?.score).toBe(heldOf(relevelled.id)?.score);
    expect([...republished.keys()].sort()).toEqual(shouldChange);
    const want = expected.get(changed.id) as Expected;
    expect(republished.get(changed.id)).toMatchObject({ score: want.score, band: want.band });
    const unchanged = [...expected.keys()].find((id) => !shouldChange.includes(id)) as string;
    expect(republished.has(unchanged)).toBe(false);
    // Its history through the API: the scorer keeps one cycle (URS_SCORE_HISTORY_CYCLES=1), this one.
    const device = await pipeline.api('GET', `/v1/tenants/${big.tenantId}/devices/${changed.id}`);
    expect(device.body.history).toEqual([
      expect.objectContaining({
        cycleId: summary.cycleId,
        cycleStartedAt: summary.cycleStartedAt,
        score: want.score,
        band: want.band,
      }),
    ]);

    // The removed device was absent from one completed cycle (URS_TOMBSTONE_AFTER_CYCLES=1): tombstoned.
    await waitFor(
      () =>
        pipeline.watch.latest(pipeline.topics.vmsRiskScores).get(`${big.tenantId}/${removed.id}`) === null,
      {
        timeoutMs: 10_000,
        description: 'a tombstone of the removed device',
      },
    );
    expect(summary.published.tombstones).toBe(1);
    expect(summary.devices.total).toBe(expected.size);
  });

  it('a bulk cycle should correct the devices whose vulnerabilities its own export changed, and count each device in its final band', async () => {
    const cvesOf = (id: string): number => criticalCves(sim.vulnerabilities(big.azureTenantId, id));
    // The fleet is generated anew each run: the donor is the device with the most critical CVEs.
    const donorId = sim
      .machines(big.azureTenantId)
      .map((machine) => machine.id)
      .reduce((best, id) => (cvesOf(id) > cvesOf(best) ? id : best));
    const donor = sim.vulnerabilities(big.azureTenantId, donorId);
    expect(criticalCves(donor)).toBeGreaterThan(0);
    /** Scored devices whose score moves when their critical CVEs go from what they have to `cves`. */
    const movedBy = (cves: number, count: number, besides: string[] = []): string[] =>
      sim
        .machines(big.azureTenantId)
        .filter((machine) => machine.id !== donorId && !besides.includes(machine.id))
        .filter((machine) => isScored(machine as Record<string, unknown>))
        .filter((machine) => {
          const record = machine as Record<string, unknown>;
          const now = expectedScore(record, cvesOf(machine.id), Date.now());
          return expectedScore(record, cves, Date.now()).score !== now.score;
        })
        .slice(0, count)
        .map((machine) => machine.id);
    // Fixed: every CVE of three devices gone. Exposed: three devices take the donor's critical CVEs.
    const fixed = movedBy(0, 3);
    const exposed = movedBy(criticalCves(donor), 3, fixed);
    expect([fixed.length, exposed.length]).toEqual([3, 3]);
    const changedAt = Date.now();
    for (const id of fixed) sim.setVulnerabilities(big.azureTenantId, id, []);
    for (const id of exposed) sim.setVulnerabilities(big.azureTenantId, id, donor);

    const summary = await nextComplete(big.tenantId, changedAt);
    const expected = expectedFleet(Date.parse(summary.cycleStartedAt));
    const latest = pipeline.watch.latest<VmsRiskScore>(pipeline.topics.vmsRiskScores);
    for (const id of [...fixed, ...exposed]) {
      const want = expected.get(id) as Expected;
      const record = latest.get(`${big.tenantId}/${id}`);
      const got = {
        id,
        score: record?.score,
        band: record?.band,
        cves: record?.vulnerabilities?.criticalCveCount,
      };
      expect(got).toEqual({ id, score: want.score, band: want.band, cves: cvesOf(id) });
      expect(record?.cycleId).toBe(summary.cycleId);
    }
    // The summary counts each device once, in the band of its corrected score.
    const bands: Record<string, number> = {};
    for (const want of expected.values()) bands[want.band] = (bands[want.band] ?? 0) + 1;
    expect(Object.fromEntries(Object.entries(summary.bands).filter(([, count]) => count > 0))).toEqual(bands);
    expect(summary.devices).toMatchObject({ total: expected.size, scored: expected.size, failed: 0 });
    expect(summary.devices.incomplete).toBe([...expected.values()].filter((want) => want.incomplete).length);
  });

  it("a bulk cycle whose export snapshot is the latest export's should read no export, and count each device in its band", async () => {
    const calls = (): Record<string, number> =>
      sim.stats().callsByTenant[big.azureTenantId.toLowerCase()] ?? {};
    const before = calls();
    const after = Date.now();
    // Nothing of the tenant changes from here: Microsoft's snapshot stays the one the latest export was read from.
    const summary = await nextComplete(big.tenantId, after);
    const now = calls();
    expect((now['bulk'] ?? 0) - (before['bulk'] ?? 0)).toBe(0);
    expect((now['exportFiles'] ?? 0) - (before['exportFiles'] ?? 0)).toBeGreaterThanOrEqual(1);
    const expected = expectedFleet(Date.parse(summary.cycleStartedAt));
    const bands: Record<string, number> = {};
    for (const want of expected.values()) bands[want.band] = (bands[want.band] ?? 0) + 1;
    expect(Object.fromEntries(Object.entries(summary.bands).filter(([, count]) => count > 0))).toEqual(bands);
    expect(summary.devices).toMatchObject({ total: expected.size, scored: expected.size, failed: 0 });
  });

  it('the scorer killed and restarted mid-cycle should leave the cycle complete with every device counted once', async () => {
    const killAfter = Date.now();
    // Mid-cycle: the first scored batch of a new cycle is out, the others are not yet all scored.
    const first = await waitFor(
      () =>
        pipeline.watch
          .of<{ tenantId: string; cycleId: string; cycleStartedAt: string }>(pipeline.topics.deviceScores)
          .find(
            (record) =>
              record.value?.tenantId === big.tenantId && Date.parse(record.value.cycleStartedAt) > killAfter,
          ),
      { timeoutMs: CYCLE_WAIT_MS, intervalMs: 20, description: 'the first scored batch of the next cycle' },
    );
    await pipeline.services.kill('scorer', 'SIGKILL');
    const cycleId = first.value.cycleId;
    // The kill may land after the scorer committed what it had done; a batch handled but not committed
    // is redelivered on restart. Replaying the cycle's first enriched batch makes that case certain.
    const enriched = pipeline.watch
      .of<{ tenantId: string; cycleId: string; batchIndex: number }>(pipeline.topics.devicesEnriched)
      .find((record) => record.value?.cycleId === cycleId && record.value.batchIndex === 0);
    expect(enriched).toBeDefined();
    await pipeline.produceRaw(pipeline.topics.devicesEnriched, [
      { key: big.tenantId, value: JSON.stringify(enriched?.value) },
    ]);
    await pipeline.services.start('scorer');

    const summary = await waitFor(() => summaries(big.tenantId).find((s) => s.cycleId === cycleId), {
      timeoutMs: CYCLE_WAIT_MS,
      intervalMs: 200,
      description: `the summary of cycle ${cycleId}`,
    });
    const expected = expectedFleet(Date.parse(summary.cycleStartedAt));
    expect(summary.status).toBe('complete');
    expect(summary.devices).toMatchObject({ total: expected.size, scored: expected.size, failed: 0 });
    expect(Object.values(summary.bands).reduce((sum, count) => sum + count, 0)).toBe(expected.size);
    expect(summaries(big.tenantId).filter((s) => s.cycleId === cycleId)).toHaveLength(1);
    // The first batch reached the publisher at least twice (the replay, and a redelivery when the kill
    // came before the scorer committed it) and was counted once.
    await waitFor(
      () =>
        pipeline.watch
          .of<{ cycleId: string; batchIndex: number }>(pipeline.topics.deviceScores)
          .filter((record) => record.value?.cycleId === cycleId && record.value.batchIndex === 0).length >= 2,
      { timeoutMs: 10_000, description: 'the replayed batch scored again' },
    );
  });

  it('a malformed message on each internal topic should land in urs.dlq and the pipeline should go on', async () => {
    const { topics } = pipeline;
    const internal = [
      topics.registration,
      topics.tenants,
      topics.deviceBatches,
      topics.devicesEnriched,
      topics.deviceScores,
    ];
    const sentAt = Date.now();
    for (const topic of internal)
      await pipeline.produceRaw(topic, [{ key: 'malformed', value: '{"not": json' }]);
    await pipeline.produceRaw(topics.deviceBatches, [
      { key: big.tenantId, value: JSON.stringify({ schemaVersion: 1, tenantId: big.tenantId }) },
    ]);

    const letters = await waitFor(
      () => {
        const seen = pipeline.watch.of<{ sourceTopic: string; error: { code: string; message: string } }>(
          topics.dlq,
        );
        const sources = new Set(seen.map((letter) => letter.value.sourceTopic));
        return internal.every((topic) => sources.has(topic)) &&
          seen.some((l) => l.value.error.code !== 'MESSAGE_NOT_JSON')
          ? seen
          : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, description: 'a dead letter from every internal topic' },
    );
    expect(
      letters.filter((letter) => letter.value.error.code === 'MESSAGE_NOT_JSON').length,
    ).toBeGreaterThanOrEqual(internal.length);
    const invalid = letters.find(
      (letter) =>
        letter.value.sourceTopic === topics.deviceBatches && letter.value.error.code !== 'MESSAGE_NOT_JSON',
    );
    expect(invalid?.value.error.message).toMatch(/cycleId|required/);

    const summary = await nextComplete(big.tenantId, sentAt);
    expect(summary.devices.failed).toBe(0);
    // The poller, the scorer and the publisher all read the bad urs.tenants record: one dead letter of it.
    const ofTenants = pipeline.watch
      .of<{ sourceTopic: string }>(topics.dlq)
      .filter((letter) => letter.value.sourceTopic === topics.tenants);
    expect(ofTenants).toHaveLength(1);
  });

  it('a cycle whose batches were dead-lettered on the way should be published partial at once, its devices failed, not at its deadline', async () => {
    const { topics } = pipeline;
    const cycles = createCycleStore(pipeline.redis.client, pipeline.redis.prefix);
    const cycleId = `lost-${randomUUID()}`;
    const startedAt = new Date().toISOString();
    // A cycle of three batches of one device each, its deadline an hour away.
    await cycles.begin({
      tenantId: big.tenantId,
      cycleId,
      startedAt,
      deadlineAt: new Date(Date.now() + 3_600_000).toISOString(),
    });
    await cycles.listed(big.tenantId, cycleId, { totalBatches: 3, totalDevices: 3, listedAt: startedAt });
    const header = (batchIndex: number) => ({
      schemaVersion: 1,
      tenantId: big.tenantId,
      cycleId,
      cycleStartedAt: startedAt,
      batchIndex,
      lastBatch: batchIndex === 2,
      ...(batchIndex === 2 ? { totalBatches: 3, totalDevices: 3 } : {}),
    });
    // Each fails its schema at another stage: no vulnerabilityMode, no collectedAt, no scoredAt.
    const invalid: [string, unknown][] = [
      [topics.deviceBatches, { ...header(0), cvssThreshold: 7, devices: [{ id: 'lost-0' }] }],
      [
        topics.devicesEnriched,
        {
          ...header(1),
          vulnerabilityMode: 'bulk',
          devices: [{ machine: { id: 'lost-1' }, vulnerabilities: null }],
        },
      ],
      [
        topics.deviceScores,
        {
          ...header(2),
          collectedAt: startedAt,
          devices: [{ deviceId: 'lost-2', score: 10, band: 'Trustworthy' }],
        },
      ],
    ];
    for (const [topic, value] of invalid)
      await pipeline.produceRaw(topic, [{ key: big.tenantId, value: JSON.stringify(value) }]);

    const summary = await waitFor(() => summaries(big.tenantId).find((s) => s.cycleId === cycleId), {
      timeoutMs: 60_000,
      intervalMs: 200,
      description: 'the summary of the cycle whose batches were dead-lettered',
    });
    expect(summary).toMatchObject({
      status: 'partial',
      devices: { total: 3, scored: 0, incomplete: 0, failed: 3 },
    });
    const letters = pipeline.watch
      .of<{ sourceTopic: string; payload: string | null }>(topics.dlq)
      .filter((letter) => letter.value.payload?.includes(cycleId));
    expect(letters.map((letter) => letter.value.sourceTopic).sort()).toEqual(
      [topics.deviceBatches, topics.devicesEnriched, topics.deviceScores].sort(),
    );
  });

  it('no client secret should appear in any log line or any record the test saw', async () => {
    const texts = [
      ...(await Promise.all(
        SERVICES.map((name) => readFile(join(pipeline.services.logDir, `${name}.log`), 'utf8')),
      )),
      ...pipeline.watch.records.map((record) => JSON.stringify(record.value) + (record.raw ?? '')),
    ];
    for (const secret of [big.secret, empty.secret, wrong.secret, 'not-the-secret']) {
      expect(texts.filter((text) => text.includes(secret))).toEqual([]);
    }
  });
});

import { randomBytes, randomUUID } from 'node:crypto';
import { DEVICE_RECORD_FIELDS, type DeviceBatch } from '@urs/contracts';
import { deleteKeysMatching, waitFor } from '@urs/testkit';
import { api as call, type ServiceProcess } from './support/services';
import {
  buildServices,
  collectTopics,
  createTestStack,
  POLL_RECHECK_MS,
  portFrom,
  type ReceivedMessage,
  type TestStack,
} from './support/stack';

// Registrar and two pollers as separate processes, real Kafka and Redis, Microsoft simulated.
// One "minute" of pollIntervalMinutes lasts 600 ms here (URS_POLL_INTERVAL_UNIT_MS), so the smallest
// valid interval, 10 minutes, is 6 s; the lease is 1.5 s. The interval bounds what a broken schedule would
// show (a start an interval late): an abandoned cycle is redone after up to a lease, a recheck and the
// process's own lateness, which on a loaded machine must stay well inside it.
const UNIT_MS = 600;
const INTERVAL_MS = 10 * UNIT_MS;
const LEASE_MS = 1_500;
/**
 * How late after a tenant is free a poller may start its cycle: the scheduler's tick (50 ms), Redis round trips
 * and process scheduling, on a shared 2-core machine under load. Half an interval: a survivor that took the
 * tenants only an interval after they were due misses it.
 */
const SLACK_MS = INTERVAL_MS / 2;
/** Answers what holds a tenant's lease and when it expires (Unix ms, Redis's clock; negative if none). */
const LEASE_HOLDER = `return {redis.call('GET', KEYS[1]), redis.call('PEXPIRETIME', KEYS[1])}`;

describe('registrar and pollers as processes', () => {
  let stack: TestStack;
  let registrar: ServiceProcess;
  let pollers: ServiceProcess[];
  /** The poller left running once the hand-over test has killed the other. */
  let survivor: ServiceProcess;
  let baseUrl: string;
  let topics: { messages: ReceivedMessage[]; close(): Promise<void> };
  const answers: string[] = [];
  const secrets: string[] = [];
  const measured: Record<string, number[]> = {
    registrationToFirstBatchMs: [],
    registrationToCycleStartMs: [],
  };

  const api = async (method: string, path: string, body?: unknown) => {
    const answer = await call(baseUrl, stack.apiToken, method, path, body);
    answers.push(answer.text);
    return answer;
  };
  const batches = (tenantId?: string): (DeviceBatch & { receivedAt: number })[] =>
    topics.messages
      .filter((m) => m.topic === stack.topic('urs.device-batches') && m.text !== null)
      .map((m) => ({ ...(JSON.parse(m.text as string) as DeviceBatch), receivedAt: m.receivedAt }))
      .filter((b) => tenantId === undefined || b.tenantId === tenantId);
  /**
   * The cycles of a tenant the pollers began, first first (a cycle's id ends with its start, in ms): each with when
   * its schedule had it due (`at once`, or a time).
   */
  const cyclesBegun = (tenantId: string): { cycleId: string; due: string }[] =>
    pollers
      .flatMap((poller) => poller.lines)
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line['message'] === 'cycle started' && line['tenantId'] === tenantId)
      .map((line) => ({ cycleId: String(line['cycleId']), due: String(line['due']) }))
      .sort((a, b) => a.cycleId.localeCompare(b.cycleId));
  const cycleStarts = (tenantId: string): number[] =>
    [...new Set(batches(tenantId).map((b) => Date.parse(b.cycleStartedAt)))].sort((a, b) => a - b);

  function microsoftTenant(devices: number): {
    azureTenantId: string;
    clientId: string;
    clientSecret: string;
  } {
    const tenant = {
      azureTenantId: randomUUID(),
      clientId: randomUUID(),
      clientSecret: `S3cr3t~${randomBytes(12).toString('hex')}`,
    };
    secrets.push(tenant.clientSecret);
    stack.sim.addTenant({
      azureTenantId: tenant.azureTenantId,
      apps: [{ clientId: tenant.clientId, clientSecret: tenant.clientSecret }],
      fleet: { size: devices },
    });
    return tenant;
  }

  beforeAll(async () => {
    buildServices();
    stack = await createTestStack({ intervalUnitMs: UNIT_MS, leaseMs: LEASE_MS });
    registrar = await stack.start('registrar');
    baseUrl = `http://127.0.0.1:${portFrom(registrar.lines, 'REST listening', 'httpPort')}`;
    pollers = [await stack.start('poller'), await stack.start('poller')];
    topics = await collectTopics(stack.kafka, [
      stack.topic('urs.tenants'),
      stack.topic('urs.device-batches'),
      stack.topic('urs.dlq'),
      stack.topic('urs.registration'),
    ]);
  });

  afterAll(async () => {
    process.stdout.write(`registrar/poller measurements: ${JSON.stringify(measured)}\n`);
    await topics?.close();
    await stack?.close();
  });

  it('PUT should register a tenant that is polled at once, its devices in batches of at most 500', async () => {
    const ms = microsoftTenant(1_203);
    const put = await api('PUT', '/v1/tenants/acme-a/defender', {
      enabled: true,
      ...ms,
      pollIntervalMinutes: 10,
    });
    const answeredAt = Date.now();
    expect(put.status).toBe(201);
    expect(put.body.defender).toMatchObject({
      clientSecretSet: true,
      clientSecretKeyId: 'k1',
      azureTenantId: ms.azureTenantId,
    });
    expect(put.body.defender.clientSecret).toBeUndefined();

    const last = await waitFor(() => batches('acme-a').find((b) => b.lastBatch), { timeoutMs: 30_000 });
    const cycle = batches('acme-a').filter((b) => b.cycleId === last.cycleId);
    const listed = stack.sim.machines(ms.azureTenantId).filter((m) => !m.mergedIntoMachineId);
    const expected = listed.length;
    expect(last.totalDevices).toBe(expected);
    expect(last.totalBatches).toBe(Math.ceil(expected / 500));
    expect(cycle.map((b) => b.batchIndex).sort((a, b) => a - b)).toEqual([
      ...Array(last.totalBatches).keys(),
    ]);
    expect(cycle.every((b) => b.devices.length <= 500)).toBe(true);
    expect(cycle.reduce((sum, b) => sum + b.devices.length, 0)).toBe(expected);
    // Exactly the devices not merged into another one, each cut down to its device record.
    const emitted = cycle.flatMap((b) => b.devices);
    expect(new Set(emitted.map((d) => d.id))).toEqual(new Set(listed.map((m) => m.id)));
    const recordFields = new Set<string>(DEVICE_RECORD_FIELDS);
    expect(emitted.filter((d) => Object.keys(d).some((field) => !recordFields.has(field)))).toEqual([]);
    expect(cycle.every((b) => b.vulnerabilityMode === 'bulk' && b.cvssThreshold === 9)).toBe(true);

    const first = cycle.reduce((a, b) => (a.receivedAt < b.receivedAt ? a : b));
    const cycleStartMs = Date.parse(first.cycleStartedAt) - Date.parse(put.body.updatedAt);
    measured['registrationToCycleStartMs']?.push(cycleStartMs);
    measured['registrationToFirstBatchMs']?.push(first.receivedAt - answeredAt);
    // At once (typically well under 1 s, reported above), not when an interval has passed since the registration:
    // its first cycle, the one read above, the scheduler began as due at once. A new tenant is due at once only
    // while its record is younger than an interval (else at its place in an interval, as one whose schedule Redis
    // lost): seen late, it would have a due time.
    expect(cyclesBegun('acme-a')[0]).toEqual({ cycleId: last.cycleId, due: 'at once' });

    const status = await waitFor(async () => {
      const got = await api('GET', '/v1/tenants/acme-a/defender');
      return got.body.status?.deviceCount === expected ? got.body.status : undefined;
    });
    expect(status).toMatchObject({
      state: 'active',
      vulnerabilityMode: 'bulk',
      lastCycleId: expect.any(String),
    });
    expect(status.note).toMatch(/bulk vulnerability export/);
    expect(Date.parse(status.nextPollAt)).toBeGreaterThan(Date.parse(status.lastCycleStartedAt));
  });

  it('a wrong secret should show in the status in actionable words, and a corrected one without re-pasting the rest', async () => {
    const ms = microsoftTenant(20);
    const wrong = `Wr0ng~${randomBytes(12).toString('hex')}`;
    secrets.push(wrong);
    const put = await api('PUT', '/v1/tenants/acme-b/defender', {
      enabled: true,
      ...ms,
      clientSecret: wrong,
      pollIntervalMinutes: 10,
    });
    expect(put.status).toBe(201);
    const status = await waitFor(async () => {
      const got = await api('GET', '/v1/tenants/acme-b/defender');
      return got.body.status?.lastErrorCode ? got.body.status : undefined;
    });
    expect(status.state).toBe('error');
    expect(status.lastErrorCode).toBe('DEFENDER_INVALID_SECRET');
    expect(status.lastErrorMessage).toMatch(/secret/i);
    const test = await api('POST', '/v1/tenants/acme-b/defender/test');
    expect(test.status).toBe(200);
    expect(test.body.ok).toBe(false);
    expect(test.body.verdict).toMatch(/^FAIL: .*secret/i);
    expect(batches('acme-b')).toHaveLength(0);

    // An update that leaves the secret out keeps the stored one.
    const interval = await api('PUT', '/v1/tenants/acme-b/defender', {
      enabled: true,
      azureTenantId: ms.azureTenantId,
      clientId: ms.clientId,
      pollIntervalMinutes: 11,
    });
    expect(interval.status).toBe(200);
    expect(interval.body.defender.pollIntervalMinutes).toBe(11);
    expect((await api('POST', '/v1/tenants/acme-b/defender/test')).body.ok).toBe(false);

    const fixed = await api('PUT', '/v1/tenants/acme-b/defender', {
      enabled: true,
      ...ms,
      pollIntervalMinutes: 10,
    });
    expect(fixed.status).toBe(200);
    const good = await api('POST', '/v1/tenants/acme-b/defender/test');
    expect(good.body).toMatchObject({
      ok: true,
      tokenIssued: true,
      machinesReadable: true,
      vulnerabilitiesReadable: true,
    });
    expect(good.body.verdict).toMatch(/^OK/);
    expect(good.body.roles).toEqual(expect.arrayContaining(['Machine.Read.All']));
    // The backoff after the failures holds until its end; then the tenant is polled and its error cleared.
    await waitFor(() => batches('acme-b').find((b) => b.lastBatch), { timeoutMs: 4 * INTERVAL_MS + 5_000 });
    await waitFor(
      async () => (await api('GET', '/v1/tenants/acme-b/defender')).body.status?.state === 'active',
    );
  });

  it('the access test should fail a tenant whose vulnerabilities are refused, naming the licence it lacks', async () => {
    const ms = microsoftTenant(12);
    // Defender for Endpoint Plan 1: the device list answers, every vulnerability call is 403 DisabledFeature.
    stack.sim.setFaults(ms.azureTenantId, { disabledFeature: ['vulnerabilities', 'bulk', 'exportFiles'] });
    const put = await api('PUT', '/v1/tenants/acme-p1/defender', {
      enabled: false,
      ...ms,
      pollIntervalMinutes: 10,
    });
    expect(put.status).toBe(201);
    const test = await api('POST', '/v1/tenants/acme-p1/defender/test');
    expect(test.status).toBe(200);
    expect(test.body).toMatchObject({
      ok: false,
      tokenIssued: true,
      machinesReadable: true,
      vulnerabilitiesReadable: false,
      error: { code: 'DEFENDER_FEATURE_DISABLED' },
    });
    expect(test.body.verdict).toMatch(/^FAIL: .*vulnerabilities are not: .*403 DisabledFeature.*Plan 2/);
    stack.sim.setFaults(ms.azureTenantId, {});
    const good = await api('POST', '/v1/tenants/acme-p1/defender/test');
    expect(good.body).toMatchObject({ ok: true, machinesReadable: true, vulnerabilitiesReadable: true });
    expect((await api('DELETE', '/v1/tenants/acme-p1/defender')).status).toBe(204);
  });

  it('two pollers should never poll the same tenant in the same interval', async () => {
    for (let i = 0; i < 6; i++) {
      const ms = microsoftTenant(40);
      expect(
        (
          await api('PUT', `/v1/tenants/fleet-${i}/defender`, {
            enabled: true,
            ...ms,
            pollIntervalMinutes: 10,
          })
        ).status,
      ).toBe(201);
    }
    const fleet = [...Array(6).keys()].map((i) => `fleet-${i}`);
    await waitFor(() => fleet.every((tenantId) => cycleStarts(tenantId).length >= 3), {
      timeoutMs: 10 * INTERVAL_MS,
      intervalMs: 100,
      description: 'three cycles of each tenant',
    });
    for (let i = 0; i < 6; i++) {
      const starts = cycleStarts(`fleet-${i}`);
      for (let j = 1; j < starts.length; j++) {
        expect((starts[j] as number) - (starts[j - 1] as number)).toBeGreaterThanOrEqual(INTERVAL_MS);
      }
      // Each batch of each cycle exactly once.
      const keys = batches(`fleet-${i}`).map((b) => `${b.cycleId}/${b.batchIndex}`);
      expect(new Set(keys).size).toBe(keys.length);
    }
    const byPoller = pollers.map(
      (p) => p.lines.filter((line) => line.includes('"message":"cycle listed"')).length,
    );
    measured['cyclesPerPoller'] = byPoller;
  });

  it('killing a poller should hand its tenants over within one lease period', async () => {
    // Slow Microsoft down so that cycles are in flight when the poller dies, and kill it mid-cycle.
    stack.sim.setLatency({ meanMs: 250 });
    const slowFrom = Date.now() + 300;
    const startedLate = (line: string): boolean =>
      line.includes('"message":"cycle started"') && Date.parse(JSON.parse(line).time) > slowFrom;
    // The victim is whichever poller starts a cycle first: each interval, a tenant goes to the poller that
    // takes its lease first, so on a busy machine one of the two may win every tenant for a while.
    const { victim, started } = await waitFor(
      () => {
        for (const poller of pollers) {
          const line = poller.lines.find(startedLate);
          if (line) return { victim: poller, started: line };
        }
        return undefined;
      },
      { timeoutMs: 6 * INTERVAL_MS, intervalMs: 25, description: 'a cycle started by either poller' },
    );
    survivor = pollers.find((poller) => poller !== victim) as ServiceProcess;
    await victim.kill();
    const killedAt = Date.now();
    const abandoned = JSON.parse(started) as {
      tenantId: string;
      cycleId: string;
      holderId: string;
      time: string;
    };
    const tenantIds = [...Array(6).keys()].map((i) => `fleet-${i}`).concat('acme-a');
    // When each tenant is free for the survivor, as Redis sees it: a lease the victim still holds at its
    // expiry (its last renewal + LEASE_MS, up to LEASE_MS after the kill), any other now, once read (a lease
    // the victim held and the survivor took before the read had run out by then).
    const leaseEnds = new Map(
      await Promise.all(
        [...new Set([...tenantIds, abandoned.tenantId])].map(async (tenantId) => {
          const [token, expiresAt] = (await stack.redis.client.eval(
            LEASE_HOLDER,
            1,
            stack.redis.key(`poll-lease:${tenantId}`),
          )) as [string | null, number];
          const readAt = Date.now();
          const victimHolds = token?.endsWith(`:${abandoned.holderId}`) === true && expiresAt > 0;
          // Renewed before the kill, never after: no later than LEASE_MS after it.
          if (victimHolds) expect(expiresAt).toBeLessThanOrEqual(killedAt + LEASE_MS);
          return [tenantId, victimHolds ? expiresAt : readAt] as const;
        }),
      ),
    );
    const leaseEnd = (tenantId: string): number => leaseEnds.get(tenantId) as number;
    await waitFor(() => tenantIds.every((id) => cycleStarts(id).some((s) => s > killedAt)), {
      timeoutMs: 4 * INTERVAL_MS + LEASE_MS,
      intervalMs: 100,
      description: 'a cycle of each tenant after the kill',
    });
    // Read after the wait: a cycle started just before the kill may deliver its batches after it.
    const lastBefore = new Map(
      tenantIds.map((id) => [id, Math.max(...cycleStarts(id).filter((s) => s < killedAt))]),
    );
    const handover: number[] = [];
    for (const tenantId of tenantIds) {
      const next = cycleStarts(tenantId).find((s) => s > killedAt);
      expect(next).toBeDefined();
      const due = Math.max((lastBefore.get(tenantId) as number) + INTERVAL_MS, killedAt);
      // Due, or free once the victim's lease ran out: the survivor, turned away by that lease, looks again
      // every POLL_RECHECK_MS.
      const free = Math.max(due, leaseEnd(tenantId) + POLL_RECHECK_MS);
      handover.push((next as number) - free);
      expect(next as number).toBeLessThanOrEqual(free + SLACK_MS);
    }
    // The cycle the victim died in is redone by the survivor once the lease ran out, not an interval later.
    const takeover = await survivor.waitForLine(
      (line) =>
        line.includes('taking over an abandoned cycle') &&
        line.includes(`"abandonedCycleId":"${abandoned.cycleId}"`),
    );
    const redoneAt = Date.parse(JSON.parse(takeover).time);
    measured['abandonedCycleRedoneAfterKillMs'] = [redoneAt - killedAt];
    measured['abandonedCycleRedoneAfterLeaseEndMs'] = [redoneAt - leaseEnd(abandoned.tenantId)];
    // Before an interval from the abandoned cycle's start, when the tenant would have been due anyway.
    expect(redoneAt).toBeLessThan(Date.parse(abandoned.time) + INTERVAL_MS);
    measured['lateAfterLeaseEndMs'] = handover;
    stack.sim.setLatency({ meanMs: 0 });
  });

  it('DELETE and disabling should stop polling', async () => {
    expect((await api('DELETE', '/v1/tenants/fleet-0/defender')).status).toBe(204);
    const deletedAt = Date.now();
    const current = await api('GET', '/v1/tenants/fleet-1/defender');
    const { clientSecretSet: _set, clientSecretKeyId: _key, ...settings } = current.body.defender;
    const disable = await api('PUT', '/v1/tenants/fleet-1/defender', { ...settings, enabled: false });
    expect(disable.status).toBe(200);
    expect(disable.body).toMatchObject({ enabled: false, disabledReason: 'disabled by an administrator' });
    const disabledAt = Date.now();
    expect((await api('GET', '/v1/tenants/fleet-0/defender')).status).toBe(404);
    // No cycle started once the poller had the deletion or the disabled record from urs.tenants: measured from
    // that, not from the REST answer, as Kafka's delivery to the poller takes its own time. A cycle due while
    // it was under way may still have started.
    const stoppedAt = async (tenantId: string): Promise<number> => {
      const line = await survivor.waitForLine(
        (candidate) =>
          candidate.includes('"message":"tenant deleted or disabled: no longer polled"') &&
          candidate.includes(`"tenantId":"${tenantId}"`),
      );
      return Date.parse(JSON.parse(line).time);
    };
    const [deletionSeen, disablingSeen] = [await stoppedAt('fleet-0'), await stoppedAt('fleet-1')];
    measured['deletionSeenAfterAnswerMs'] = [deletionSeen - deletedAt];
    measured['disablingSeenAfterAnswerMs'] = [disablingSeen - disabledAt];
    // A tenant still polled would be due again within an interval of its last cycle. fleet-2, of the same
    // interval on the same poller, starting two cycles after both were seen shows a whole interval of polling
    // passed since: measured by the poller's own cycles, not by a sleep a loaded machine can outrun.
    const seen = Math.max(deletionSeen, disablingSeen);
    await waitFor(() => cycleStarts('fleet-2').filter((s) => s > seen).length >= 2, {
      timeoutMs: 3 * INTERVAL_MS + 30_000,
      intervalMs: 100,
      description: 'two fleet-2 cycles after the deletion and the disabling were seen',
    });
    expect(cycleStarts('fleet-0').filter((s) => s > deletionSeen)).toEqual([]);
    expect(cycleStarts('fleet-1').filter((s) => s > disablingSeen)).toEqual([]);
  });

  it('a Redis wiped while running should get its tenants back from urs.tenants and polling should resume', async () => {
    const before = (await api('GET', '/v1/tenants/acme-a/defender')).body;
    const wipedAt = Date.now();
    // Every key under URS_REDIS_PREFIX. (Bottleneck's own keys, `b_<prefix>…`, are left: its recovery from a
    // wiped settings key does not recognise Redis 7's "ERR "-prefixed script errors; see the limiter.)
    const deleted = await deleteKeysMatching(stack.redis.client, `${stack.redis.prefix}*`);
    expect(deleted).toBeGreaterThan(0);
    await registrar.waitForLine(
      (line) =>
        line.includes('tenants rebuilt from urs.tenants') && Date.parse(JSON.parse(line).time) > wipedAt,
      15_000,
    );
    const after = await api('GET', '/v1/tenants/acme-a/defender');
    expect(after.status).toBe(200);
    expect(after.body.revision).toBe(before.revision);
    expect(after.body.defender).toEqual(before.defender);
    expect((await api('GET', '/v1/tenants/fleet-0/defender')).status).toBe(404);
    expect((await api('GET', '/v1/tenants/fleet-1/defender')).body.enabled).toBe(false);
    await waitFor(
      () => batches('acme-a').find((b) => b.lastBatch && Date.parse(b.cycleStartedAt) > wipedAt),
      {
        timeoutMs: 2 * INTERVAL_MS + 5_000,
      },
    );
    await waitFor(async () => (await api('GET', '/v1/tenants/acme-a/defender')).body.status?.deviceCount > 0);
  });

  it('the client secret should appear in no log line, no topic but urs.tenants (sealed), no REST answer, no metric', async () => {
    const metrics: string[] = [];
    for (const service of [registrar, survivor]) {
      const port = portFrom(service.lines, 'started', 'metricsPort');
      metrics.push(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
    }
    expect(metrics.join('\n')).toMatch(/urs_poll_cycles_total/);
    const logs = stack.processes.flatMap((p) => p.lines);
    expect(logs.length).toBeGreaterThan(50);
    const sealed = topics.messages.filter((m) => m.topic === stack.topic('urs.tenants') && m.text !== null);
    expect(sealed.length).toBeGreaterThan(0);
    expect(sealed.every((m) => (m.text as string).includes('"ciphertext"'))).toBe(true);
    const everything = [...logs, ...answers, ...metrics, ...topics.messages.map((m) => m.text ?? '')];
    for (const secret of secrets) {
      expect(everything.filter((text) => text.includes(secret))).toEqual([]);
    }
  });
});

import { startSimulator, type Simulator } from '@urs/simulator';
import { CLIENT_ID, control, getToken, request, SECRET, TENANT } from './helpers';

describe('control API', () => {
  let sim: Simulator;

  beforeAll(async () => {
    sim = await startSimulator();
  });

  afterAll(() => sim.close());

  test('control should add a tenant, change its fleet, set faults and quotas, and report stats over HTTP', async () => {
    const created = await control(sim, 'POST', 'tenants', {
      azureTenantId: TENANT,
      apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
      fleet: { size: 12, seed: 3 },
    });
    expect(created.status).toBe(201);
    expect((await control(sim, 'GET', 'tenants')).json).toEqual([
      { azureTenantId: TENANT, machines: 12, apps: [CLIENT_ID] },
    ]);

    const listed = await control(sim, 'GET', `tenants/${TENANT}/machines?skip=2&top=3`);
    expect(listed.json.count).toBe(12);
    // The page is streamed from each record's JSON: the records themselves, whole.
    expect(listed.json.value).toEqual(sim.machines(TENANT).slice(2, 5));
    const past = await control(sim, 'GET', `tenants/${TENANT}/machines?skip=20&top=3`);
    expect(past.json).toEqual({ count: 12, value: [] });

    const target = sim.machines(TENANT)[0]?.id as string;
    expect(
      (await control(sim, 'PATCH', `tenants/${TENANT}/machines/${target}`, { riskScore: 'High' })).status,
    ).toBe(200);
    expect(sim.machines(TENANT)[0]?.riskScore).toBe('High');
    const added = await control(sim, 'POST', `tenants/${TENANT}/machines`, { count: 2 });
    expect(added.json.ids).toHaveLength(2);
    expect((await control(sim, 'DELETE', `tenants/${TENANT}/machines/${target}`)).status).toBe(200);
    expect(sim.machineCount(TENANT)).toBe(13);
    expect((await control(sim, 'DELETE', `tenants/${TENANT}/machines/${target}`)).status).toBe(404);

    const vulnTarget = sim.machines(TENANT)[0]?.id as string;
    const cve = {
      ...sim.vulnerabilities(TENANT, sim.machines(TENANT)[1]?.id as string)[0],
      id: 'CVE-2024-0001',
      name: 'CVE-2024-0001',
      cvssV3: 9.8,
    };
    expect(
      (await control(sim, 'PUT', `tenants/${TENANT}/machines/${vulnTarget}/vulnerabilities`, [cve])).status,
    ).toBe(200);
    expect(
      (await control(sim, 'GET', `tenants/${TENANT}/machines/${vulnTarget}/vulnerabilities`)).json.value,
    ).toEqual([cve]);

    expect((await control(sim, 'PUT', `faults/${TENANT}`, { status5xxRate: 1 })).status).toBe(200);
    const token = await getToken(sim);
    expect([500, 503]).toContain((await request(sim, '/api/machines?$top=1', { token })).status);
    expect((await control(sim, 'PUT', `faults/${TENANT}`, { status5xxRate: 7 })).status).toBe(400);
    await control(sim, 'PUT', `faults/${TENANT}`, {});
    expect((await control(sim, 'PUT', 'quotas', { enabled: false })).status).toBe(200);
    expect((await control(sim, 'PUT', 'latency', { meanMs: 1, jitterMs: 1 })).status).toBe(200);
    expect((await control(sim, 'PUT', 'token-lifetime', { seconds: 30 })).status).toBe(200);

    const stats = await control(sim, 'GET', 'stats');
    expect(stats.json.calls).toMatchObject({ token: 1, machines: 1 });
    expect(stats.json.faultsInjected).toBe(1);
    expect((await control(sim, 'POST', 'stats/reset')).status).toBe(200);
    expect((await control(sim, 'GET', 'stats')).json.calls).toEqual({});
    expect((await control(sim, 'GET', 'info')).json).toMatchObject({
      baseUrl: sim.baseUrl,
      caFile: sim.caFile,
      quotas: false,
      tokenLifetimeSec: 30,
    });
    expect((await control(sim, 'GET', 'nope')).status).toBe(404);

    // The export snapshot a change waits for (fleet.exportSnapshotMs), made at once.
    const held = '6b2f6d7a-0c1e-4a5b-9d8c-7e6f5a4b3c2d';
    await control(sim, 'POST', 'tenants', {
      azureTenantId: held,
      apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
      fleet: { size: 2, seed: 3, exportSnapshotMs: 3_600_000 },
    });
    const first = (await control(sim, 'POST', `tenants/${held}/export`)).json.generatedAtMs as number;
    sim.removeMachine(held, sim.machines(held)[0]?.id as string);
    const generated = await control(sim, 'POST', `tenants/${held}/export`);
    expect(generated.status).toBe(200);
    expect(generated.json.generatedAtMs).toBeGreaterThan(first);
    expect((await control(sim, 'POST', 'tenants', { apps: [] })).json.error).toBe(
      'azureTenantId must be a non-empty string',
    );
  });
});

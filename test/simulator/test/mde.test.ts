import { startSimulator, type Simulator } from '@urs/simulator';
import { KEPT_SNAPSHOTS } from '../src/fleet';
import { CLIENT_ID, EMPTY_TENANT, getToken, request, SECRET, simWithTenant, TENANT } from './helpers';

const NO_ROLES_CLIENT = '77777777-aaaa-4bbb-8ccc-000000000007';
const MACHINES_ONLY_CLIENT = '88888888-aaaa-4bbb-8ccc-000000000008';

describe('MDE API simulation', () => {
  let sim: Simulator;
  let token: string;

  // A simulator of each test's own: the fleet and CVEs some tests change are as seeded, whichever tests ran before.
  beforeEach(async () => {
    sim = await simWithTenant(250, 7, [
      { clientId: NO_ROLES_CLIENT, roles: [] },
      { clientId: MACHINES_ONLY_CLIENT, roles: ['Machine.Read.All'] },
    ]);
    token = await getToken(sim);
  }, 30_000);

  afterEach(() => sim.close());

  const get = (path: string, bearer = token) => request(sim, path, { token: bearer });

  test('machines should answer 401 without, with a forged and with an expired token', async () => {
    expect((await request(sim, '/api/machines')).status).toBe(401);
    const forged = `${token.slice(0, token.lastIndexOf('.'))}.${Buffer.from('nope').toString('base64url')}`;
    const reply = await get('/api/machines', forged);
    expect(reply.status).toBe(401);
    expect(reply.json.error).toMatchObject({ code: 'Unauthorized' });
    expect(reply.json.error.target).toMatch(/^[0-9a-f-]{36}$/);

    const shortLived = await startSimulator({ tokenLifetimeSec: 1 });
    // The simulator's clock stands still until moved: the token expires when the test says, not after a wait
    // that a busy machine could stretch past the token's one second before its first call.
    const start = Date.now();
    const clock = jest.spyOn(Date, 'now').mockReturnValue(start);
    try {
      shortLived.addTenant({
        azureTenantId: TENANT,
        apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
        fleet: { size: 5 },
      });
      const brief = await getToken(shortLived);
      expect((await request(shortLived, '/api/machines', { token: brief })).status).toBe(200);
      clock.mockReturnValue(start + 2_000);
      expect((await request(shortLived, '/api/machines', { token: brief })).status).toBe(401);
    } finally {
      clock.mockRestore();
      await shortLived.close();
    }
  }, 30_000);

  test('machines should answer 403 Forbidden when the token lacks the role', async () => {
    const noRoles = await getToken(sim, TENANT, NO_ROLES_CLIENT);
    const reply = await get('/api/machines?$top=10', noRoles);
    expect(reply.status).toBe(403);
    expect(reply.json.error.code).toBe('Forbidden');
    // Microsoft's words for a token without the role (its roles listed after "application roles:").
    expect(reply.json.error.message).toBe(
      'Missing application roles. API required roles: Machine.Read.All,Machine.ReadWrite.All, application roles: .',
    );
    const machinesOnly = await getToken(sim, TENANT, MACHINES_ONLY_CLIENT);
    expect((await get('/api/machines?$top=10', machinesOnly)).status).toBe(200);
    const id = sim.machines(TENANT)[0]?.id as string;
    const refused = await get(`/api/machines/${id}/vulnerabilities`, machinesOnly);
    expect(refused.status).toBe(403);
    expect(refused.json.error.message).toBe(
      'Missing application roles. API required roles: Vulnerability.Read.All, application roles: Machine.Read.All.',
    );
  });

  test('machines should page with $top/$skip without a next link and end on a short page', async () => {
    const seen: string[] = [];
    for (let skip = 0; ; skip += 100) {
      const reply = await get(`/api/machines?$top=100&$skip=${skip}`);
      expect(reply.status).toBe(200);
      expect(reply.json['@odata.context']).toBe(`${sim.baseUrl}/api/$metadata#Machines`);
      expect(reply.json['@odata.nextLink']).toBeUndefined();
      seen.push(...reply.json.value.map((m: { id: string }) => m.id));
      if (reply.json.value.length < 100) break;
    }
    expect(seen).toEqual(sim.machines(TENANT).map((m) => m.id));
    expect(new Set(seen).size).toBe(250);
    // No machine in the page: 404, as Microsoft answers a listing that finds none.
    const beyond = await get('/api/machines?$top=100&$skip=250');
    expect(beyond.status).toBe(404);
    expect(beyond.json.error).toMatchObject({ code: 'ResourceNotFound' });
  });

  test('machines should carry documented field names, enum casing and 7-digit timestamps', async () => {
    const machines = sim.machines(TENANT);
    for (const m of machines) {
      expect(m.id).toMatch(/^[0-9a-f]{40}$/);
      expect(m.lastSeen).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
      expect([
        'Active',
        'Inactive',
        'ImpairedCommunication',
        'NoSensorData',
        'NoSensorDataImpairedCommunication',
        'Unknown',
      ]).toContain(m.healthStatus);
      expect(['Onboarded', 'CanBeOnboarded', 'InsufficientInfo', 'Unsupported']).toContain(
        m.onboardingStatus,
      );
      if (m.rbacGroupId !== undefined) expect(typeof m.rbacGroupId).toBe('number');
    }
    const active = machines.filter((m) => m.healthStatus === 'Active').length;
    expect(active).toBeGreaterThan(machines.length / 2);
    expect(machines.some((m) => m.riskScore === 'High')).toBe(true);
    expect(machines.some((m) => m.defenderAvStatus === undefined)).toBe(true);
    expect(machines.some((m) => m.osBuild === null)).toBe(true);
  });

  test('machines should reject $top above 10,000 and apply the $filter subset', async () => {
    const tooBig = await get('/api/machines?$top=10001');
    expect(tooBig.status).toBe(400);
    expect(tooBig.json.error.code).toBe('ODataError');

    const all = sim.machines(TENANT);
    const filter = encodeURIComponent("healthStatus eq 'Active' and riskScore eq 'High'");
    const filtered = await get(`/api/machines?$top=10000&$filter=${filter}`);
    const expected = all
      .filter((m) => m.healthStatus === 'Active' && m.riskScore === 'High')
      .map((m) => m.id);
    expect(expected.length).toBeGreaterThan(0);
    expect(filtered.json.value.map((m: { id: string }) => m.id)).toEqual(expected);

    const cutoff = new Date(Date.now() - 3 * 24 * 3600 * 1000).toISOString();
    const recent = await get(`/api/machines?$filter=${encodeURIComponent(`lastSeen gt ${cutoff}`)}`);
    expect(recent.json.value.length).toBe(
      all.filter((m) => Date.parse(m.lastSeen as string) > Date.parse(cutoff)).length,
    );

    const one = await get(`/api/machines?$filter=${encodeURIComponent(`id eq '${all[3]?.id}'`)}`);
    expect(one.json.value).toEqual([all[3]]);
    expect((await get(`/api/machines?$filter=${encodeURIComponent('osBuild eq 5')}`)).status).toBe(400);
  });

  test('machines should answer 404 ResourceNotFound for an empty fleet', async () => {
    const emptyToken = await getToken(sim, EMPTY_TENANT);
    const reply = await get('/api/machines?$top=100', emptyToken);
    expect(reply.status).toBe(404);
    expect(reply.json.error.code).toBe('ResourceNotFound');
  });

  test('vulnerabilities should list the device CVEs and answer 404 for an unknown id', async () => {
    const machines = sim.machines(TENANT);
    const withVulns = machines.find((m) => sim.vulnerabilities(TENANT, m.id).length > 0);
    expect(withVulns).toBeDefined();
    const reply = await get(`/api/machines/${withVulns?.id}/vulnerabilities`);
    expect(reply.status).toBe(200);
    // The context of get-discovered-vulnerabilities' example.
    expect(reply.json['@odata.context']).toBe(
      `${sim.baseUrl}/api/$metadata#Collection(Analytics.Contracts.PublicAPI.PublicVulnerabilityDto)`,
    );
    expect(reply.json.value).toEqual(sim.vulnerabilities(TENANT, withVulns?.id as string));
    const v = reply.json.value[0];
    expect(v.id).toMatch(/^CVE-\d{4}-\d+$/);
    expect(Object.keys(v)).toEqual(
      expect.arrayContaining([
        'name',
        'description',
        'severity',
        'cvssV3',
        'cvssVector',
        'exposedMachines',
        'publishedOn',
        'updatedOn',
        'publicExploit',
        'exploitVerified',
        'exploitInKit',
        'exploitTypes',
        'exploitUris',
        'CveSupportability',
        'epss',
      ]),
    );
    // vulnerability.md: exploitTypes' possible values.
    const exploitTypes = new Set(
      machines.flatMap((m) => sim.vulnerabilities(TENANT, m.id)).flatMap((x) => x.exploitTypes),
    );
    expect(exploitTypes.size).toBeGreaterThan(0);
    for (const type of exploitTypes)
      expect(['Local privilege escalation', 'Denial of service', 'Local']).toContain(type);
    const counts = machines.map((m) => sim.vulnerabilities(TENANT, m.id).length);
    expect(Math.max(...counts)).toBeLessThanOrEqual(30);
    expect(counts.filter((c) => c === 0).length).toBeGreaterThan(machines.length / 4);

    const unknown = await get(`/api/machines/${'0'.repeat(40)}/vulnerabilities`);
    expect(unknown.status).toBe(404);
    expect(unknown.json.error.code).toBe('ResourceNotFound');
  });

  test('SoftwareVulnerabilitiesByMachine should read the snapshot its first page was of, whatever changes meanwhile', async () => {
    type Row = { deviceId: string; cveId: string | null };
    const key = (r: Row) => `${r.deviceId}/${r.cveId ?? ''}`;
    /** Every row of one read, `between` run after its first page. */
    const readAll = async (between: () => void = () => undefined): Promise<Row[]> => {
      const rows: Row[] = [];
      let url: string | undefined = '/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=50';
      while (url) {
        const reply = await get(url);
        expect(reply.status).toBe(200);
        rows.push(...(reply.json.value as Row[]));
        if (rows.length === reply.json.value.length) between();
        url = (reply.json['@odata.nextLink'] as string | undefined)?.slice(sim.baseUrl.length);
      }
      return rows;
    };
    const before = (await readAll()).map(key);
    const machines = sim.machines(TENANT);
    const [first, later, patched] = [machines[0]!.id, machines[200]!.id, machines[150]!.id];
    const during = await readAll(() => {
      // A device already read leaves (every later ordinal moves back one), another's CVEs and OS change.
      sim.removeMachine(TENANT, first);
      sim.setVulnerabilities(TENANT, later, []);
      sim.updateMachine(TENANT, patched, { osPlatform: 'Linux' });
    });
    expect(during.map(key)).toEqual(before);
    expect(
      during.filter((r) => r.deviceId === patched).map((r) => (r as { osPlatform?: string }).osPlatform),
    ).not.toContain('Linux');
    // The next read is of the new snapshot.
    const after = await readAll();
    expect(after.some((r) => r.deviceId === first || r.deviceId === later)).toBe(false);
    expect(
      after
        .filter((r) => r.deviceId === patched)
        .every((r) => (r as { osPlatform?: string }).osPlatform === 'Linux'),
    ).toBe(true);
  });

  test('SoftwareVulnerabilitiesByMachine should answer 404 for the next link of a snapshot no longer kept', async () => {
    const first = await get('/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=50');
    const next = (first.json['@odata.nextLink'] as string).slice(sim.baseUrl.length);
    const ids = sim.machines(TENANT).map((m) => m.id);
    // The snapshot served now and the ones before it, KEPT_SNAPSHOTS in all.
    for (const id of ids.slice(0, KEPT_SNAPSHOTS - 1)) sim.updateMachine(TENANT, id, { osPlatform: 'Linux' });
    expect((await get(next)).status).toBe(200);
    sim.updateMachine(TENANT, ids[KEPT_SNAPSHOTS - 1]!, { osPlatform: 'Linux' });
    const lapsed = await get(next);
    expect(lapsed.status).toBe(404);
    expect(lapsed.json.error.code).toBe('ResourceNotFound');
  });

  test('SoftwareVulnerabilitiesByMachine should page through every row by nextLink', async () => {
    const rows: Array<{ deviceId: string; cveId: string | null }> = [];
    let url: string | undefined = '/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=97';
    let pages = 0;
    while (url) {
      const reply = await get(url);
      expect(reply.status).toBe(200);
      rows.push(...reply.json.value);
      const next: string | undefined = reply.json['@odata.nextLink'];
      if (next) expect(next).toContain('$skiptoken=');
      url = next?.slice(sim.baseUrl.length);
      pages++;
    }
    const expected = sim
      .machines(TENANT)
      .flatMap((m) => sim.vulnerabilities(TENANT, m.id).map((v) => `${m.id}/${v.id}`));
    expect(rows.filter((r) => r.cveId !== null).map((r) => `${r.deviceId}/${r.cveId}`)).toEqual(expected);
    expect(rows.some((r) => r.cveId === null)).toBe(true);
    expect(pages).toBe(Math.ceil(rows.length / 97));

    // Pages are streamed as they are rendered: chunked, with no length announced up front.
    const whole = await get('/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=5000');
    expect(whole.headers['transfer-encoding']).toBe('chunked');
    expect(whole.headers['content-length']).toBeUndefined();
    expect(whole.json.value.length).toBe(rows.length);

    const capped = await get('/api/machines/SoftwareVulnerabilitiesByMachine?$top=5');
    expect(capped.json.value).toHaveLength(5);
    expect(capped.json['@odata.nextLink']).toBeUndefined();
    expect((await get('/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=200001')).status).toBe(400);
  });

  test('SoftwareVulnerabilitiesByMachine rows should carry their device, software and CVE fields', async () => {
    const machine = sim.machines(TENANT).find((m) => sim.vulnerabilities(TENANT, m.id).length > 1);
    if (!machine) throw new Error('the fleet has no device with two CVEs');
    const [first, second] = sim.vulnerabilities(TENANT, machine.id);
    // An override with text that JSON must escape, next to a catalog CVE whose row text is shared.
    sim.setVulnerabilities(TENANT, machine.id, [
      { ...first!, id: 'CVE-2099-"1\\', cvssV3: 9.1, exploitInKit: false, exploitVerified: true },
      second!,
    ]);
    sim.updateMachine(TENANT, machine.id, {
      osPlatform: 'Windows11',
      computerDnsName: 'pc"7',
      version: '23H2',
      rbacGroupName: null,
    });
    const rows: Record<string, unknown>[] = [];
    let url: string | undefined = '/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=5000';
    while (url) {
      const reply = await get(url);
      rows.push(...reply.json.value);
      url = reply.json['@odata.nextLink']?.slice(sim.baseUrl.length);
    }
    const mine = rows.filter((row) => row.deviceId === machine.id);
    expect(mine.slice(0, 2).map((row) => row.cveId)).toEqual(['CVE-2099-"1\\', second!.id]);
    const row = mine[0]!;
    expect(Object.keys(row)).toEqual([
      'id',
      'deviceId',
      'rbacGroupName',
      'deviceName',
      'osPlatform',
      'osVersion',
      'osArchitecture',
      'lastSeenTimestamp',
      'firstSeenTimestamp',
      'softwareVendor',
      'softwareName',
      'softwareVersion',
      'cveId',
      'vulnerabilitySeverityLevel',
      'recommendedSecurityUpdate',
      'recommendedSecurityUpdateId',
      'recommendedSecurityUpdateUrl',
      'diskPaths',
      'registryPaths',
      'exploitabilityLevel',
      'recommendationReference',
      'securityUpdateAvailable',
      'cvssScore',
    ]);
    expect(row).toMatchObject({
      deviceName: 'pc"7',
      osPlatform: 'Windows11',
      osVersion: '23H2',
      // get-assessment-software-vulnerabilities: "Unassigned" for a device in no RBAC group.
      rbacGroupName: 'Unassigned',
      vulnerabilitySeverityLevel: first!.severity,
      exploitabilityLevel: 'ExploitIsVerified',
      cvssScore: 9.1,
      lastSeenTimestamp: (machine.lastSeen as string).slice(0, 19).replace('T', ' '),
    });
    expect(row.id).toBe(
      `${machine.id}_${String(row.softwareVendor)}_${String(row.softwareName)}_${String(row.softwareVersion)}_CVE-2099-"1\\`,
    );
    expect((row.diskPaths as string[])[0]).toMatch(/^C:\\Program Files\\.+\.exe$/);
    expect(row.registryPaths).toEqual([
      `HKEY_LOCAL_MACHINE\\SOFTWARE\\${String(row.softwareVendor)}\\${String(row.softwareName)}`,
    ]);
    // Every inventory row (no CVE) repeats its device's first software with the CVE fields null.
    const inventory = rows.filter((r) => r.cveId === null);
    expect(inventory.length).toBeGreaterThan(0);
    for (const r of inventory) {
      expect(r).toMatchObject({
        vulnerabilitySeverityLevel: null,
        cvssScore: null,
        exploitabilityLevel: 'NoExploit',
      });
      expect(String(r.id).endsWith('_')).toBe(true);
    }
  });

  test('fleet changes should show up in the next listing', async () => {
    const before = sim.machines(TENANT);
    const victim = before[10]?.id as string;
    sim.removeMachine(TENANT, victim);
    sim.updateMachine(TENANT, before[11]?.id as string, { healthStatus: 'Inactive', riskScore: 'High' });
    const [added] = sim.addMachines(TENANT, 1);
    const reply = await get('/api/machines?$top=10000');
    const ids = reply.json.value.map((m: { id: string }) => m.id);
    expect(ids).not.toContain(victim);
    expect(ids).toContain(added);
    expect(reply.json.value.find((m: { id: string }) => m.id === before[11]?.id)).toMatchObject({
      healthStatus: 'Inactive',
      riskScore: 'High',
    });
    expect((await get(`/api/machines/${victim}/vulnerabilities`)).status).toBe(404);
    expect((await get(`/api/machines/${added}`)).json.id).toBe(added);
  });
});

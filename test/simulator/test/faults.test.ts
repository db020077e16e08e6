import { startSimulator, type Simulator } from '@urs/simulator';
import { waitFor } from '@urs/testkit';
import { CLIENT_ID, EMPTY_TENANT, getToken, request, SECRET, TENANT } from './helpers';

const CALM_TENANT = 'aaaaaaaa-aaaa-4bbb-8ccc-00000000000a';

describe('fault injection', () => {
  let sim: Simulator;
  let token: string;

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false });
    sim.addTenant({
      azureTenantId: TENANT,
      apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
      fleet: { size: 40 },
    });
    sim.addTenant({
      azureTenantId: CALM_TENANT,
      apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
      fleet: { size: 5 },
    });
    sim.addTenant({ azureTenantId: EMPTY_TENANT, apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }] });
    token = await getToken(sim);
  });

  afterEach(() => {
    sim.setFaults(TENANT, {});
    sim.setFaults('*', {});
  });
  afterAll(() => sim.close());

  test('status5xxRate should answer 500 or 503 with the MDE error body, for that tenant only', async () => {
    sim.setFaults(TENANT, { status5xxRate: 1 });
    const reply = await request(sim, '/api/machines?$top=10', { token });
    expect([500, 503]).toContain(reply.status);
    expect(reply.json.error.code).toMatch(/^(InternalServerError|ServiceUnavailable)$/);
    const calm = await getToken(sim, CALM_TENANT);
    expect((await request(sim, '/api/machines?$top=10', { token: calm })).status).toBe(200);
    expect(sim.stats().faultsByKind['5xx']).toBeGreaterThanOrEqual(1);
  });

  test('resetRate should destroy the connection', async () => {
    sim.setFaults(TENANT, { resetRate: 1 });
    await expect(request(sim, '/api/machines?$top=10', { token })).rejects.toThrow(
      /socket hang up|ECONNRESET/,
    );
  });

  test('timeoutRate should never answer, and close() should still end the request', async () => {
    sim.setFaults(TENANT, { timeoutRate: 1 });
    await expect(request(sim, '/api/machines?$top=10', { token, timeoutMs: 300 })).rejects.toThrow(
      'client timeout',
    );

    const other = await startSimulator();
    other.addTenant({
      azureTenantId: TENANT,
      apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
      fleet: { size: 3 },
    });
    other.setFaults('*', { timeoutRate: 1 });
    let pending: Promise<unknown> = Promise.resolve();
    try {
      pending = request(other, '/api/machines', { token: await getToken(other), timeoutMs: 60_000 });
      pending.catch(() => undefined); // awaited below; a failure before that must not go unhandled
      await waitFor(() => other.stats().inFlight === 1, { description: 'the request in flight' });
    } finally {
      // Closed whatever happens above: a simulator left listening keeps Jest from exiting.
      await other.close();
    }
    await expect(pending).rejects.toThrow(/socket hang up|ECONNRESET/);
  });

  test("openIdFailures set for '*' should reset the next n metadata requests of each tenant without its own", async () => {
    sim.setFaults('*', { openIdFailures: 1 });
    const metadata = (tenant: string) => request(sim, `/${tenant}/v2.0/.well-known/openid-configuration`);
    for (const tenant of [TENANT, CALM_TENANT]) {
      await expect(metadata(tenant)).rejects.toThrow(/socket hang up|ECONNRESET/);
      expect((await metadata(tenant)).status).toBe(200);
    }
  });

  test("a tenant's faults cleared with {} should give way to '*' again", async () => {
    sim.setFaults(TENANT, { status5xxRate: 1 });
    sim.setFaults(TENANT, {});
    sim.setFaults('*', { malformedRate: 1 });
    const reply = await request(sim, '/api/machines?$top=1', { token });
    expect(reply.status).toBe(200);
    expect(() => JSON.parse(reply.text)).toThrow();
  });

  test("throttledCalls set for '*' should answer each tenant's next n calls 429, counted per tenant", async () => {
    const calm = await getToken(sim, CALM_TENANT);
    sim.setFaults('*', { throttledCalls: 1 });
    expect((await request(sim, '/api/machines?$top=1', { token })).status).toBe(429);
    expect((await request(sim, '/api/machines?$top=1', { token: calm })).status).toBe(429);
    expect((await request(sim, '/api/machines?$top=1', { token })).status).toBe(200);
    expect((await request(sim, '/api/machines?$top=1', { token: calm })).status).toBe(200);
  });

  test("notFoundCalls should answer the tenant's next n calls 404 ResourceNotFound, MDE's error body, then as ever", async () => {
    sim.setFaults(TENANT, { notFoundCalls: 1 });
    const missing = await request(sim, '/api/machines?$top=1', { token });
    expect(missing.status).toBe(404);
    expect(missing.json.error.code).toBe('ResourceNotFound');
    expect(sim.stats().faultsByKind['notFound']).toBe(1);
    const listed = await request(sim, '/api/machines?$top=1', { token });
    expect(listed.status).toBe(200);
    expect(listed.json.value).toHaveLength(1);
  });

  test("a counted fault set again for '*' should count from n again", async () => {
    sim.setFaults('*', { throttledCalls: 1 });
    expect((await request(sim, '/api/machines?$top=1', { token })).status).toBe(429);
    sim.setFaults('*', { throttledCalls: 1 });
    expect((await request(sim, '/api/machines?$top=1', { token })).status).toBe(429);
    expect((await request(sim, '/api/machines?$top=1', { token })).status).toBe(200);
  });

  test('malformedRate should answer 200 with JSON that does not parse', async () => {
    sim.setFaults(TENANT, { malformedRate: 1 });
    const reply = await request(sim, '/api/machines?$top=10', { token });
    expect(reply.status).toBe(200);
    expect(() => JSON.parse(reply.text)).toThrow();
  });

  test('malformedRate should also cut a streamed bulk export page', async () => {
    sim.setFaults(TENANT, { malformedRate: 1 });
    const reply = await request(sim, '/api/machines/SoftwareVulnerabilitiesByMachine', { token });
    expect(reply.status).toBe(200);
    expect(reply.text.startsWith('{"@odata.context":')).toBe(true);
    expect(() => JSON.parse(reply.text)).toThrow();
  });

  test('shortPageRate should return a short page while more devices remain', async () => {
    sim.setFaults(TENANT, { shortPageRate: 1 });
    const first = await request(sim, '/api/machines?$top=10&$skip=0', { token });
    expect(first.json.value).toHaveLength(5);
    const last = await request(sim, '/api/machines?$top=10&$skip=30', { token });
    expect(last.json.value).toHaveLength(10);
    expect(sim.stats().faultsByKind.shortPage).toBeGreaterThanOrEqual(1);
  });

  test("pastEndPage 'empty' should answer a $skip past the last device 200 with no device, an empty fleet still 404", async () => {
    const past = '/api/machines?$top=10&$skip=40';
    expect((await request(sim, past, { token })).status).toBe(404);
    sim.setFaults('*', { pastEndPage: 'empty' });
    const reply = await request(sim, past, { token });
    expect(reply.status).toBe(200);
    expect(reply.json.value).toEqual([]);
    expect((await request(sim, '/api/machines?$top=10&$skip=30', { token })).json.value).toHaveLength(10);
    const none = await request(sim, '/api/machines?$top=10', { token: await getToken(sim, EMPTY_TENANT) });
    expect(none.status).toBe(404);
  });

  test('tokenEndpoint should extend 5xx faults to the token endpoint with an Entra error body', async () => {
    sim.setFaults(TENANT, { status5xxRate: 1 });
    expect(await getToken(sim)).toMatch(/^ey/);
    sim.setFaults(TENANT, { status5xxRate: 1, tokenEndpoint: true });
    const reply = await request(sim, `/${TENANT}/oauth2/v2.0/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials',
    });
    expect(reply.status).toBe(503);
    expect(reply.json).toMatchObject({ error: 'temporarily_unavailable', error_codes: [50000] });
  });

  test('disabledFeature should answer the listed endpoint kinds 403 DisabledFeature, the others as usual', async () => {
    sim.setFaults(TENANT, { disabledFeature: ['vulnerabilities', 'bulk', 'exportFiles'] });
    const list = await request(sim, '/api/machines?$top=1', { token });
    expect(list.status).toBe(200);
    const id = encodeURIComponent(list.json.value[0].id);
    for (const path of [
      `/api/machines/${id}/vulnerabilities`,
      '/api/machines/SoftwareVulnerabilitiesByMachine',
      '/api/machines/SoftwareVulnerabilitiesExport',
    ]) {
      const reply = await request(sim, path, { token });
      expect(reply.status).toBe(403);
      expect(reply.json.error).toMatchObject({
        code: 'DisabledFeature',
        message: "Tenant feature isn't enabled.",
      });
    }
    expect(sim.stats().faultsByKind.disabledFeature).toBeGreaterThanOrEqual(3);
  });

  test('setFaults should reject a disabledFeature that is not a list of endpoint kinds', () => {
    expect(() => sim.setFaults(TENANT, { disabledFeature: ['alerts'] as never })).toThrow(
      'faults.disabledFeature must be an array of machines, vulnerabilities, bulk, exportFiles',
    );
  });

  test('setFaults should reject rates outside 0..1', () => {
    expect(() => sim.setFaults(TENANT, { resetRate: 2 })).toThrow(
      'faults.resetRate must be a number between 0 and 1',
    );
  });
});

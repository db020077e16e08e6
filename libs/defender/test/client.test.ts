import { getEventListeners } from 'node:events';
import { inspect } from 'node:util';
import { silentLogger } from '@urs/logging';
import { UrsError, retryPolicy } from '@urs/resilience';
import { type Simulator, startSimulator } from '@urs/simulator';
import { capturingLogger, type LogLine, waitFor } from '@urs/testkit';
import {
  DefenderError,
  DefenderErrorCode,
  type TokenSource,
  createApiCaller,
  createHttpsAgent,
  createLocalLimiter,
  createLocalQuotaGate,
  createTokenSource,
  isSetupErrorCode,
  resolveEndpoints,
  MICROSOFT_QUOTAS,
  MIN_HALVED_BULK_PAGE_SIZE,
  type BulkExportRead,
  type CallLimiter,
  type DefenderClient,
  type QuotaGate,
} from '../src';
import { type BulkRowEntry, bulkRowEntry } from '../src/bulk-rows';
import { ODataRowScanner } from '../src/odata-rows';
import { type TestApp, failureOf, newApp, simClient } from './support';

let sim: Simulator;
let app: TestApp;
let expired: TestApp;
let machineOnly: TestApp;
let noRoles: TestApp;
let noAlerts: TestApp;
let unprovisioned: TestApp;

beforeAll(async () => {
  sim = await startSimulator({ quotas: false });
  app = newApp();
  expired = { ...newApp(), azureTenantId: app.azureTenantId };
  machineOnly = { ...newApp(), azureTenantId: app.azureTenantId };
  noRoles = { ...newApp(), azureTenantId: app.azureTenantId };
  noAlerts = { ...newApp(), azureTenantId: app.azureTenantId };
  unprovisioned = newApp();
  sim.addTenant({
    azureTenantId: app.azureTenantId,
    apps: [
      app,
      { ...expired, secretExpired: true },
      { ...machineOnly, roles: ['Machine.Read.All'] },
      { ...noRoles, roles: [] },
      { ...noAlerts, roles: ['Machine.Read.All', 'Vulnerability.Read.All'] },
    ],
    fleet: { size: 40, seed: 11 },
  });
  sim.addTenant({
    azureTenantId: unprovisioned.azureTenantId,
    apps: [unprovisioned],
    defenderProvisioned: false,
  });
});

afterAll(async () => {
  await sim.close();
});

/** The tenant's export read in pages of `pageSize` rows, each row as "device CVE" ("-" for none), and what the read counted. */
async function exportRows(
  client: DefenderClient,
  pageSize = 50,
): Promise<{ rows: string[]; read: BulkExportRead }> {
  const rows: string[] = [];
  const read = await client.readVulnerabilitiesByMachine(
    (deviceId, vulnerability) => rows.push(`${deviceId} ${vulnerability?.id ?? '-'}`),
    { pageSize },
  );
  return { rows, read };
}

/**
 * For a read under `malformedRate: 0.3`, whose faults the simulator rolls from the generator it shares with every
 * earlier call: pages of 10 rows (over 30 pages, so some answer fails whatever the generator's state, but for a
 * chance of 0.7^30), 12 attempts per call (so no call gives up, but for 0.3^12), and room in the bulk quota for
 * those calls.
 */
const FAULTY_PAGE_SIZE = 10;
const faultyReadClient = () =>
  simClient(sim, app, {
    retryPolicy: retryPolicy({ maxAttempts: 12, initialDelayMs: 10, maxDelayMs: 100 }),
    quota: createLocalQuotaGate({
      limits: { ...MICROSOFT_QUOTAS, bulk: [{ limit: 1_000, windowMs: 60_000 }] },
    }),
  });

const failure = (from: TestApp, run: (client: DefenderClient) => Promise<unknown>): Promise<DefenderError> =>
  failureOf(sim, from, run);

function expectNoSecret(error: DefenderError, secret: string): void {
  for (const text of [
    error.message,
    error.stack ?? '',
    JSON.stringify(error),
    JSON.stringify(error.details),
    inspect(error, { depth: Infinity }),
  ]) {
    expect(text).not.toContain(secret);
  }
}

describe('createDefenderClient sign-in errors (real @azure/identity against the simulator over TLS)', () => {
  it('listMachines should explain a wrong secret (AADSTS7000215) without the secret', async () => {
    const wrong = { ...app, clientSecret: `${app.clientSecret}-typo` };
    const error = await failure(wrong, (c) => c.listMachines());
    expect(error.code).toBe(DefenderErrorCode.INVALID_SECRET);
    expect(error.message).toContain("Paste the secret's Value, not its ID");
    expect(error.canRetry).toBe(false);
    expectNoSecret(error, wrong.clientSecret);
  });

  it.each([
    ['an expired secret', () => expired, DefenderErrorCode.SECRET_EXPIRED, /AADSTS7000222/],
    [
      'an unknown client id',
      () => ({ ...app, clientId: newApp().clientId }),
      DefenderErrorCode.UNKNOWN_CLIENT,
      /AADSTS700016/,
    ],
    [
      'an unknown tenant',
      () => ({ ...app, azureTenantId: newApp().azureTenantId }),
      DefenderErrorCode.UNKNOWN_TENANT,
      /AADSTS90002/,
    ],
    ['a tenant without Defender', () => unprovisioned, DefenderErrorCode.NOT_PROVISIONED, /AADSTS500011/],
  ])('listMachines should explain %s', async (_name, who, code, message) => {
    const from = who();
    const error = await failure(from, (c) => c.listMachines());
    expect(error.code).toBe(code);
    expect(error.message).toMatch(message);
    expectNoSecret(error, from.clientSecret);
  });

  it("listMachines should call Entra's temporarily_unavailable (AADSTS50000) an outage to try again, not a sign-in failure", async () => {
    const own = newApp();
    sim.addTenant({ azureTenantId: own.azureTenantId, apps: [own], fleet: { size: 1, seed: 3 } });
    sim.setFaults(own.azureTenantId, { status5xxRate: 1, tokenEndpoint: true });
    try {
      const error = await failure(own, (c) => c.listMachines());
      expect(error).toMatchObject({ code: DefenderErrorCode.UNAVAILABLE, canRetry: true });
      expect(isSetupErrorCode(error.code)).toBe(false);
      expect(error.message).toContain('AADSTS50000');
      expectNoSecret(error, own.clientSecret);
    } finally {
      sim.removeTenant(own.azureTenantId);
    }
  });

  it("getToken should call a passing failure of the tenant's OpenID metadata an outage, not an unknown tenant", async () => {
    const own = newApp();
    sim.addTenant({ azureTenantId: own.azureTenantId, apps: [own], fleet: { size: 1, seed: 4 } });
    // MSAL's two tries fail; the document is served again when the failure is looked into.
    sim.setFaults(own.azureTenantId, { openIdFailures: 2 });
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    const tokens = createTokenSource({
      endpoints: resolveEndpoints(undefined, undefined, { authorityHost: sim.baseUrl, apiBase: sim.baseUrl }),
      credentials: own,
      httpsAgent: agent,
    });
    try {
      await expect(tokens.getToken()).rejects.toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
        canRetry: true,
      });
      expect(sim.stats().faultsByKind).toMatchObject({ openIdReset: 2 });
      await expect(tokens.getToken()).resolves.toMatchObject({ token: expect.any(String) });
    } finally {
      agent.destroy();
      sim.removeTenant(own.azureTenantId);
    }
  });

  it('getToken should call an unreachable Entra an outage, not a wrong tenant', async () => {
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    const tokens = createTokenSource({
      endpoints: resolveEndpoints(undefined, undefined, {
        authorityHost: 'https://127.0.0.1:1',
        apiBase: sim.baseUrl,
      }),
      credentials: app,
      httpsAgent: agent,
    });
    try {
      await expect(tokens.getToken()).rejects.toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
        canRetry: true,
      });
    } finally {
      agent.destroy();
    }
  });
});

describe('createDefenderClient consent', () => {
  it('getMachineVulnerabilities should report missing consent on 403 and never retry it', async () => {
    const id = sim.machines(app.azureTenantId)[0]!.id;
    sim.resetStats();
    const error = await failure(machineOnly, (c) => c.getMachineVulnerabilities(id));
    expect(error.code).toBe(DefenderErrorCode.CONSENT_MISSING);
    expect(error.message).toContain('Vulnerability.Read.All');
    expect(error.message).toContain('the token carries: Machine.Read.All');
    expect(sim.stats().calls.vulnerabilities).toBe(1);
  });

  it('checkAccess should say OK when every permission is granted', async () => {
    const { client, close } = simClient(sim, app);
    try {
      sim.resetStats();
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: true,
        tokenIssued: true,
        machinesReadable: true,
        vulnerabilitiesReadable: true,
        noDevices: false,
      });
      // The listed device's vulnerabilities were asked for, as a per-device cycle asks.
      expect(sim.stats().calls).toMatchObject({ machines: 1, vulnerabilities: 1 });
      expect(report.permissions).toEqual({
        'Machine.Read.All': true,
        'Vulnerability.Read.All': true,
      });
      expect(report.unusedRoles).toEqual(['Alert.Read.All']);
      expect(report.verdict).toBe(
        'OK: credentials and consent work; the token carries Machine.Read.All, Vulnerability.Read.All. ' +
          'Alert.Read.All is not needed and may be removed.',
      );
    } finally {
      await close();
    }
  });

  it('checkAccess should pass an app without Alert.Read.All, which nothing reads', async () => {
    const { client, close } = simClient(sim, noAlerts);
    try {
      const report = await client.checkAccess();
      expect(report).toMatchObject({ ok: true, tokenIssued: true, machinesReadable: true, unusedRoles: [] });
      expect(report.verdict).toBe(
        'OK: credentials and consent work; the token carries Machine.Read.All, Vulnerability.Read.All.',
      );
    } finally {
      await close();
    }
  });

  it('checkAccess should name the permissions the token lacks', async () => {
    const { client, close } = simClient(sim, machineOnly);
    try {
      sim.resetStats();
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: false,
        tokenIssued: true,
        machinesReadable: true,
        vulnerabilitiesReadable: false,
        roles: ['Machine.Read.All'],
      });
      // The token cannot be granted the call: none is spent on it.
      expect(sim.stats().calls.vulnerabilities ?? 0).toBe(0);
      expect(report.verdict).toBe(
        'FAIL: credentials work, but the token lacks Vulnerability.Read.All: add these WindowsDefenderATP application permissions and grant admin consent.',
      );
    } finally {
      await close();
    }
  });

  it('checkAccess should report a token without roles as missing consent, naming every permission it lacks', async () => {
    const { client, close } = simClient(sim, noRoles);
    try {
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: false,
        tokenIssued: true,
        machinesReadable: false,
        vulnerabilitiesReadable: false,
        error: { code: DefenderErrorCode.CONSENT_MISSING },
      });
      // Microsoft's id of the refusal, for its support: the error body's target, a UUID in the simulator.
      expect(report.verdict).toMatch(
        /^FAIL: the Defender API refused \/api\/machines \(403 Forbidden: Missing application roles\. API required roles: Machine\.Read\.All,Machine\.ReadWrite\.All, application roles: \.\): the token lacks Machine\.Read\.All, Vulnerability\.Read\.All: add these WindowsDefenderATP application permissions and grant admin consent \(the token carries: no roles; Microsoft request id [0-9a-f-]{36}\)\.$/,
      );
    } finally {
      await close();
    }
  });

  it('checkAccess should report a sign-in failure in one line without the secret', async () => {
    const wrong = { ...app, clientSecret: 'a-wrong-secret-value-1234' };
    const { client, close } = simClient(sim, wrong);
    try {
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: false,
        tokenIssued: false,
        error: { code: DefenderErrorCode.INVALID_SECRET },
      });
      expect(report.verdict).not.toContain('\n');
      expect(JSON.stringify(report)).not.toContain(wrong.clientSecret);
    } finally {
      await close();
    }
  });
});

describe('createDefenderClient token of another API', () => {
  it('checkAccess should name the audience of a token MDE refuses 403 for being another API’s, not ask for permissions', async () => {
    // A scope naming another API (here Microsoft Graph): Entra issues the token, MDE refuses it 403 Forbidden.
    const { client, close } = simClient(sim, app, {
      overrides: {
        authorityHost: sim.baseUrl,
        apiBase: sim.baseUrl,
        scope: 'https://graph.microsoft.com/.default',
      },
    });
    try {
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: false,
        tokenIssued: true,
        machinesReadable: false,
        error: { code: DefenderErrorCode.CONSENT_MISSING },
      });
      expect(report.verdict).toMatch(
        /^FAIL: The Defender API refused \/api\/machines for tenant \S+ \(403 Forbidden: .+\): the token was issued for https:\/\/graph\.microsoft\.com, not for WindowsDefenderATP \(https:\/\/api\.securitycenter\.microsoft\.com\): the token scope names another API; permissions and admin consent do not change this \(Microsoft request id [0-9a-f-]{36}\)\.$/,
      );
      await expect(client.listMachines({})).rejects.toMatchObject({
        code: DefenderErrorCode.CONSENT_MISSING,
        details: { audience: 'https://graph.microsoft.com' },
      });
    } finally {
      await close();
    }
  });
});

describe('createDefenderClient token endpoint that hangs', () => {
  it('checkAccess should say that Entra ID did not answer within the wait, naming it, without the secret', async () => {
    const own = newApp();
    sim.addTenant({ azureTenantId: own.azureTenantId, apps: [own] });
    sim.setFaults(own.azureTenantId, { timeoutRate: 1, tokenEndpoint: true });
    const { client, close } = simClient(sim, own);
    try {
      const report = await client.checkAccess(AbortSignal.timeout(2_000));
      expect(report).toMatchObject({
        ok: false,
        tokenIssued: false,
        error: { code: DefenderErrorCode.UNAVAILABLE },
      });
      expect(report.verdict).toBe(
        `FAIL: Entra ID (${new URL(sim.baseUrl).host}) did not answer the token request for tenant ` +
          `${own.azureTenantId} within 2 seconds: it may be down, or not reachable from here`,
      );
      expect(JSON.stringify(report)).not.toContain(own.clientSecret);
      // Stopped otherwise than at a deadline (a shutdown): no time limit to speak of.
      const stop = new AbortController();
      setTimeout(() => stop.abort(), 100);
      expect((await client.checkAccess(stop.signal)).verdict).toBe(
        'FAIL: Stopped while waiting for a token from Entra ID',
      );
    } finally {
      sim.removeTenant(own.azureTenantId);
      await close();
    }
  });
});

describe('createDefenderClient tokens', () => {
  it('getMachineVulnerabilities should send a token taken after its quota wait, which outlasts a token', async () => {
    const own = newApp();
    sim.addTenant({ azureTenantId: own.azureTenantId, apps: [own], fleet: { size: 6, seed: 5 } });
    // Tokens of 2 s, and a quota of 2 calls per 1.5 s: the last calls wait longer than a token lives.
    sim.setTokenLifetime(2);
    const quota = createLocalQuotaGate({
      limits: { ...MICROSOFT_QUOTAS, vulnerabilities: [{ limit: 2, windowMs: 1_500 }] },
    });
    const { client, close } = simClient(sim, own, { quota });
    try {
      sim.resetStats();
      const ids = sim.machines(own.azureTenantId).map((m) => m.id);
      const results = await Promise.allSettled(ids.map((id) => client.getMachineVulnerabilities(id)));
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      // Not one call spent on a token that expired while it waited.
      expect(sim.stats().calls.vulnerabilities).toBe(6);
    } finally {
      sim.setTokenLifetime(3599);
      sim.removeTenant(own.azureTenantId);
      await close();
    }
  }, 20_000);

  it('getMachineVulnerabilities should get a fresh token and retry once when the API answers 401', async () => {
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    const endpoints = resolveEndpoints(undefined, undefined, {
      authorityHost: sim.baseUrl,
      apiBase: sim.baseUrl,
    });
    const real = createTokenSource({ endpoints, credentials: app, httpsAgent: agent });
    let refreshed = 0;
    // A token the API no longer accepts (revoked, or from another signer) until a refresh.
    const tokens: TokenSource = {
      getToken: async () =>
        refreshed > 0
          ? real.getToken()
          : { token: 'eyJhbGciOiJub25lIn0.eyJyb2xlcyI6W119.x', expiresOnTimestamp: Date.now() + 3_600_000 },
      refreshToken: async () => {
        refreshed++;
        return real.refreshToken();
      },
    };
    const api = createApiCaller({
      azureTenantId: app.azureTenantId,
      clientId: app.clientId,
      apiBase: sim.baseUrl,
      tokens,
      limiter: createLocalLimiter(),
      quota: createLocalQuotaGate(),
      httpsAgent: agent,
      retryPolicy: retryPolicy({ maxAttempts: 1 }),
      requestTimeoutMs: 2_000,
      maxThrottleWaitMs: 0,
      logger: silentLogger,
    });
    try {
      const id = sim.machines(app.azureTenantId)[0]!.id;
      await expect(api.get('vulnerabilities', `/api/machines/${id}/vulnerabilities`)).resolves.toMatchObject({
        status: 200,
      });
      expect(refreshed).toBe(1);
    } finally {
      agent.destroy();
    }
  });

  it('get should fail UNAUTHORIZED when a fresh token is refused too', async () => {
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    const bad = { token: 'not-a-token', expiresOnTimestamp: Date.now() + 3_600_000 };
    const api = createApiCaller({
      azureTenantId: app.azureTenantId,
      clientId: app.clientId,
      apiBase: sim.baseUrl,
      tokens: { getToken: async () => bad, refreshToken: async () => bad },
      limiter: createLocalLimiter(),
      quota: createLocalQuotaGate(),
      httpsAgent: agent,
      retryPolicy: retryPolicy({ maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 1 }),
      requestTimeoutMs: 2_000,
      maxThrottleWaitMs: 0,
      logger: silentLogger,
    });
    try {
      sim.resetStats();
      await expect(api.get('machines', '/api/machines')).rejects.toMatchObject({
        code: DefenderErrorCode.UNAUTHORIZED,
        canRetry: false,
      });
      expect(sim.stats().calls.machines).toBe(2);
    } finally {
      agent.destroy();
    }
  });

  it('listMachines should keep working when tokens expire during the cycle', async () => {
    sim.setTokenLifetime(1);
    sim.setLatency({ meanMs: 150 });
    const { client, close } = simClient(sim, app);
    try {
      sim.resetStats();
      const machines = await client.listMachines({ pageSize: 4 });
      expect(machines).toHaveLength(40);
      // 11 pages over about 2 s with 1-second tokens: more than one token was needed.
      expect(sim.stats().calls.token).toBeGreaterThan(1);
    } finally {
      sim.setTokenLifetime(3599);
      sim.setLatency({ meanMs: 0 });
      await close();
    }
  }, 20_000);
});

describe('createApiCaller next links', () => {
  it('get should follow a next link on the tenant’s own API host only', async () => {
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    const endpoints = resolveEndpoints(undefined, undefined, {
      authorityHost: sim.baseUrl,
      apiBase: sim.baseUrl,
    });
    const api = createApiCaller({
      azureTenantId: app.azureTenantId,
      clientId: app.clientId,
      apiBase: sim.baseUrl,
      tokens: createTokenSource({ endpoints, credentials: app, httpsAgent: agent }),
      limiter: createLocalLimiter(),
      quota: createLocalQuotaGate(),
      httpsAgent: agent,
      retryPolicy: retryPolicy({ maxAttempts: 1 }),
      requestTimeoutMs: 2_000,
      maxThrottleWaitMs: 0,
      logger: silentLogger,
    });
    try {
      sim.resetStats();
      const result = await api.get(
        'bulk',
        'https://elsewhere.example.com/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=3',
      );
      expect(result.status).toBe(200);
      expect((result as { body: { value: unknown[] } }).body.value).toHaveLength(3);
      expect(sim.stats().calls.bulk).toBe(1);
    } finally {
      agent.destroy();
    }
  });
});

describe('createDefenderClient vulnerabilities', () => {
  it('getMachineVulnerabilities should return the device’s CVEs', async () => {
    const { client, close } = simClient(sim, app);
    try {
      for (const machine of sim.machines(app.azureTenantId).slice(0, 5)) {
        const expected = [
          ...new Set(sim.vulnerabilities(app.azureTenantId, machine.id).map((v) => v.id)),
        ].sort();
        const got = await client.getMachineVulnerabilities(machine.id);
        expect(got.map((v) => v.id).sort()).toEqual(expected);
      }
    } finally {
      await close();
    }
  });

  it("a caller's long-lived signal should keep no listener of the calls that ended, and still stop a call", async () => {
    const { client, close } = simClient(sim, app);
    const service = new AbortController();
    try {
      const machines = sim.machines(app.azureTenantId).slice(0, 5);
      await client.listMachines({ signal: service.signal });
      for (const machine of machines) await client.getMachineVulnerabilities(machine.id, service.signal);
      // Each call listened to the signal while it ran (to stop with the service) and let go of it when it ended.
      expect(getEventListeners(service.signal, 'abort')).toHaveLength(0);
      sim.setLatency({ meanMs: 2_000 });
      const call = client.getMachineVulnerabilities(machines[0]!.id, service.signal);
      setTimeout(() => service.abort(new Error('the service stops')), 100);
      await expect(call).rejects.toMatchObject({ canRetry: false });
    } finally {
      sim.setLatency({ meanMs: 0 });
      await close();
    }
  });

  it('a call should count against the quota from when it holds a slot, not from when it waited for one', async () => {
    const events: string[] = [];
    const local = createLocalQuotaGate();
    const quota: QuotaGate = {
      async acquire(...args) {
        events.push('quota taken');
        const claim = await local.acquire(...args);
        return {
          sent() {
            events.push('sent');
            claim.sent();
          },
          release: () => claim.release(),
        };
      },
      block: (...args) => local.block(...args),
    };
    const slots = createLocalLimiter({ maxConcurrent: 1 });
    let freeSlot = (): void => undefined;
    const holder = slots.schedule(() => new Promise<void>((resolve) => (freeSlot = resolve)));
    const limiter: CallLimiter = {
      schedule(task) {
        events.push('waits for a slot');
        return slots.schedule(task);
      },
      close: () => slots.close(),
    };
    const { client, close } = simClient(sim, app, { limiter, quota });
    try {
      const machine = sim.machines(app.azureTenantId)[0] as { id: string };
      const call = client.getMachineVulnerabilities(machine.id);
      // Its quota taken, the call waits for the only slot (another tenant's call holds it), not yet sent.
      await waitFor(() => events.includes('waits for a slot'));
      expect(events).toEqual(['quota taken', 'waits for a slot']);
      events.push('slot free');
      freeSlot();
      await holder;
      await call;
      expect(events).toEqual(['quota taken', 'waits for a slot', 'slot free', 'sent']);
    } finally {
      freeSlot();
      await close();
    }
  });

  it("a call's request should be made as soon as its slot is given, with nothing asynchronous before it in the slot", async () => {
    // The requests the https agent was given (a ClientRequest hands itself to its agent as it is made; the
    // token's requests go through it too).
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    const requested: string[] = [];
    // `addRequest` is Node's own, not in its types.
    const taking = agent as unknown as { addRequest: (request: { path: string }, options: unknown) => void };
    const addRequest = taking.addRequest.bind(agent);
    taking.addRequest = (request, options) => {
      requested.push(request.path);
      addRequest(request, options);
    };
    const local = createLocalLimiter({ maxConcurrent: 10 });
    const inSlot: string[][] = [];
    // A limiter that looks, as soon as each task it runs has started, at the requests made so far.
    const limiter = {
      schedule<T>(task: (slotEnds: AbortSignal) => Promise<T>): Promise<T> {
        return local.schedule((slotEnds) => {
          const running = task(slotEnds);
          inSlot.push([...requested]);
          return running;
        });
      },
      close: () => local.close(),
    };
    const { client, close } = simClient(sim, app, { limiter, agent });
    try {
      const machine = sim.machines(app.azureTenantId)[0] as { id: string };
      await client.getMachineVulnerabilities(machine.id);
      // The task's own synchronous run made the request: a slot never waits idle for the request it was given to.
      expect(inSlot).toHaveLength(1);
      expect(inSlot[0]?.filter((path) => path.startsWith('/api/'))).toEqual([
        `/api/machines/${machine.id}/vulnerabilities`,
      ]);
    } finally {
      await close();
    }
  });

  it("a call whose slot cannot be had should fail with the limiter's error, once, without being called an API failure", async () => {
    let asked = 0;
    const limiter = {
      schedule<T>(): Promise<T> {
        asked++;
        return Promise.reject(new Error('the limiter lost its Redis'));
      },
      close: async () => undefined,
    };
    const { client, close } = simClient(sim, app, { limiter });
    try {
      const machine = sim.machines(app.azureTenantId)[0] as { id: string };
      const error = await client.getMachineVulnerabilities(machine.id).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(Error);
      expect(error).not.toBeInstanceOf(DefenderError);
      expect((error as Error).message).toBe('the limiter lost its Redis');
      expect(asked).toBe(1);
    } finally {
      await close();
    }
  });

  it('getMachineVulnerabilities should fail NOT_FOUND for a device that is gone', async () => {
    const error = await failure(app, (c) => c.getMachineVulnerabilities('0'.repeat(40)));
    expect(error).toMatchObject({ code: DefenderErrorCode.NOT_FOUND, canRetry: false });
  });

  /** Every device of the tenant has, in `bulk`, the distinct CVEs the per-device endpoint lists for it. */
  function expectSameCvesAsPerDevice({
    devices: bulk,
    invalid,
  }: {
    devices: Map<string, { id: string }[] | null>;
    invalid: number;
  }): void {
    expect(invalid).toBe(0);
    for (const machine of sim.machines(app.azureTenantId)) {
      const expected = [
        ...new Set(sim.vulnerabilities(app.azureTenantId, machine.id).map((v) => v.id)),
      ].sort();
      expect((bulk.get(machine.id) ?? []).map((v) => v.id).sort()).toEqual(expected);
    }
  }

  it('getVulnerabilitiesByMachine should follow the next links and give the same CVEs per device as the per-device calls', async () => {
    const { client, close } = simClient(sim, app);
    try {
      sim.resetStats();
      const bulk = await client.getVulnerabilitiesByMachine({ pageSize: 50 });
      expect(sim.stats().calls.bulk).toBeGreaterThan(2);
      expectSameCvesAsPerDevice(bulk);
    } finally {
      await close();
    }
  });

  it('getVulnerabilitiesByMachine should keep a CVE listed on several products once per device', async () => {
    const multi = newApp();
    sim.addTenant({
      azureTenantId: multi.azureTenantId,
      apps: [multi],
      fleet: { size: 60, seed: 13, multiProductCves: true },
    });
    const { client, close } = simClient(sim, multi);
    try {
      const rows: { machineId: string; cveId: string }[] = [];
      await client.readVulnerabilitiesByMachine(
        (machineId, vulnerability) => {
          if (vulnerability) rows.push({ machineId, cveId: vulnerability.id });
        },
        { pageSize: 50 },
      );
      const distinct = new Set(rows.map((r) => `${r.machineId}/${r.cveId}`));
      // The export does list CVEs more than once per device: the merge below has something to merge.
      expect(rows.length).toBeGreaterThan(distinct.size);
      const { devices, invalid } = await client.getVulnerabilitiesByMachine({ pageSize: 50 });
      expect(invalid).toBe(0);
      for (const machine of sim.machines(multi.azureTenantId)) {
        const listed = (devices.get(machine.id) ?? []).map((v) => v.id);
        expect(listed).toHaveLength(new Set(listed).size);
        expect(listed.sort()).toEqual(
          sim
            .vulnerabilities(multi.azureTenantId, machine.id)
            .map((v) => v.id)
            .sort(),
        );
      }
    } finally {
      await close();
      sim.removeTenant(multi.azureTenantId);
    }
  });

  it('readVulnerabilitiesByMachine should hand out the rows of a page cut midway again when it is retried', async () => {
    const { client, close } = faultyReadClient();
    try {
      const { rows: clean, read } = await exportRows(client, FAULTY_PAGE_SIZE);
      expect(read).toEqual({
        pages: Math.ceil(clean.length / FAULTY_PAGE_SIZE),
        rows: clean.length,
        invalid: 0,
      });

      // A third of the answers end halfway through: their first rows come once per attempt.
      sim.setFaults(app.azureTenantId, { malformedRate: 0.3 });
      sim.resetStats();
      const { rows: cut, read: retried } = await exportRows(client, FAULTY_PAGE_SIZE);
      expect(retried.pages).toBe(read.pages);
      expect(sim.stats().calls.bulk).toBeGreaterThan(read.pages);
      expect(retried.rows).toBe(cut.length);
      expect(cut.length).toBeGreaterThan(clean.length);
      expect(new Set(cut)).toEqual(new Set(clean));

      // Merged per device, the rows given twice change nothing.
      const bulk = await client.getVulnerabilitiesByMachine({ pageSize: 50 });
      expectSameCvesAsPerDevice(bulk);
    } finally {
      sim.setFaults(app.azureTenantId, {});
      await close();
    }
  });

  it('readVulnerabilitiesByMachine should ask a page cut at its slot’s end again with half the page size, and read every row', async () => {
    // ~13,700 rows of ~1 KB at 1.6 MB/s, in slots that end after 4.5 s: a page of 10,000 rows (~6 s) is cut
    // however fast the machine; one of 5,000 (~3 s) arrives within the slot also on a loaded one.
    const slow = newApp();
    sim.addTenant({
      azureTenantId: slow.azureTenantId,
      apps: [slow],
      fleet: { size: 300, seed: 5, exportRowsPerDevice: 40 },
    });
    const lines: LogLine[] = [];
    const { client, close } = simClient(sim, slow, {
      limiter: createLocalLimiter({ jobExpirationMs: 5_000 }),
      retryPolicy: retryPolicy({ maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 10 }),
      logger: capturingLogger(lines),
    });
    try {
      const { rows: clean } = await exportRows(client, 200_000);
      expect(clean.length).toBeGreaterThan(2 * MIN_HALVED_BULK_PAGE_SIZE);
      sim.setFaults(slow.azureTenantId, { bodyBytesPerSec: 1_600_000 });
      const { rows, read } = await exportRows(client, 2 * MIN_HALVED_BULK_PAGE_SIZE);
      expect(new Set(rows)).toEqual(new Set(clean));
      // Every page after the first cut one is asked with the smaller size too.
      expect(read.pages).toBe(Math.ceil(clean.length / MIN_HALVED_BULK_PAGE_SIZE));
      const halved = lines.filter((line) => line.level === 'warn' && line['pageSize'] !== undefined);
      expect(halved).toMatchObject([
        { azureTenantId: slow.azureTenantId, page: 1, pageSize: MIN_HALVED_BULK_PAGE_SIZE },
      ]);
    } finally {
      sim.setFaults(slow.azureTenantId, {});
      await close();
      sim.removeTenant(slow.azureTenantId);
    }
  }, 60_000);

  it('scanVulnerabilitiesByMachine should give each answer, retried ones again, to a sink of its own', async () => {
    const { client, close } = faultyReadClient();
    try {
      const { rows: expected, read } = await exportRows(client, FAULTY_PAGE_SIZE);
      sim.setFaults(app.azureTenantId, { malformedRate: 0.3 });
      sim.resetStats();
      const rows: string[] = [];
      let sinks = 0;
      const scanned = await client.scanVulnerabilitiesByMachine(
        () => {
          sinks++;
          return new ODataRowScanner((row: BulkRowEntry) => {
            if (!('invalid' in row)) rows.push(`${row.deviceId} ${row.vulnerability?.id ?? '-'}`);
          }, bulkRowEntry);
        },
        { pageSize: FAULTY_PAGE_SIZE },
      );
      expect(scanned.pages).toBe(read.pages);
      // One sink per call, the retried ones included; the rows are the same set.
      expect(sinks).toBe(sim.stats().calls.bulk);
      expect(sinks).toBeGreaterThan(read.pages);
      expect(new Set(rows)).toEqual(new Set(expected));
    } finally {
      sim.setFaults(app.azureTenantId, {});
      await close();
    }
  });

  it('scanVulnerabilitiesByMachine should read no further while a push of the sink has not settled', async () => {
    const { client, close } = simClient(sim, app);
    try {
      const { rows: expected } = await exportRows(client);
      const rows: string[] = [];
      let waiting = false;
      let early = 0;
      let waits = 0;
      await client.scanVulnerabilitiesByMachine(() => {
        const scanner = new ODataRowScanner((row: BulkRowEntry) => {
          if (!('invalid' in row)) rows.push(`${row.deviceId} ${row.vulnerability?.id ?? '-'}`);
        }, bulkRowEntry);
        return {
          push: (chunk) => {
            if (waiting) early++;
            scanner.push(chunk);
            // Every push is behind for a moment: the next chunk must wait for it.
            waiting = true;
            waits++;
            return new Promise<void>((resolve) =>
              setTimeout(() => {
                waiting = false;
                resolve();
              }, 1),
            );
          },
          end: () => scanner.end(),
        };
      });
      expect(waits).toBeGreaterThan(0);
      expect(early).toBe(0);
      expect(new Set(rows)).toEqual(new Set(expected));
    } finally {
      await close();
    }
  });

  /** A sink's own failure: its reader gone (the fold thread at its heap limit). */
  const foldThreadGone = (): UrsError =>
    new UrsError('EXPORT_FOLD_OUT_OF_MEMORY', "the export's fold thread reached its heap limit", {
      canRetry: true,
    });

  it("scanVulnerabilitiesByMachine should fail with the sink's own failure at an answer's end, not retry it as Microsoft's", async () => {
    const { client, close } = simClient(sim, app);
    // The sink's reader gone (the fold thread at its heap limit): not a body that is not JSON, and the page,
    // asked again, would only fail again.
    const gone = foldThreadGone();
    try {
      sim.resetStats();
      let sinks = 0;
      const scanned = client.scanVulnerabilitiesByMachine(() => {
        sinks++;
        return { push: () => undefined, end: () => Promise.reject(gone) };
      });
      await expect(scanned).rejects.toBe(gone);
      expect(sinks).toBe(1);
      expect(sim.stats().calls.bulk).toBe(1);
    } finally {
      await close();
    }
  });

  it("scanVulnerabilitiesByMachine should fail with the sink's own failure from a push at once: the rest of the answer is not read, nor the page asked again", async () => {
    const { client, close } = simClient(sim, app);
    // The sink's reader gone midway (the fold thread at its heap limit): the answer is read no further,
    // and the failure is the sink's, not Microsoft's or the network's.
    const gone = foldThreadGone();
    try {
      sim.resetStats();
      let sinks = 0;
      let pushes = 0;
      let ends = 0;
      const scanned = client.scanVulnerabilitiesByMachine(() => {
        sinks++;
        return {
          push: () => {
            pushes++;
            throw gone;
          },
          end: () => {
            ends++;
            return Promise.reject(new Error('the answer was read to its end'));
          },
        };
      });
      await expect(scanned).rejects.toBe(gone);
      expect({ sinks, pushes, ends, calls: sim.stats().calls.bulk }).toEqual({
        sinks: 1,
        pushes: 1,
        ends: 0,
        calls: 1,
      });
    } finally {
      await close();
    }
  });

  it("getExportGeneration should name the export's snapshot, the same until the tenant's data changes", async () => {
    const { client, close } = simClient(sim, app);
    try {
      const first = await client.getExportGeneration();
      expect(first.files).toBe(1);
      expect(new Date(first.generatedTime).toISOString()).toBe(first.generatedTime);
      expect(await client.getExportGeneration()).toEqual(first);
      const [device] = sim.machines(app.azureTenantId);
      sim.setVulnerabilities(app.azureTenantId, device?.id ?? '', []);
      const after = await client.getExportGeneration();
      expect(Date.parse(after.generatedTime)).toBeGreaterThan(Date.parse(first.generatedTime));
    } finally {
      await close();
    }
  });

  it('getVulnerabilitiesByMachine should reject a page size above 200,000', async () => {
    const error = await failure(app, (c) => c.getVulnerabilitiesByMachine({ pageSize: 200_001 }));
    expect(error.code).toBe(DefenderErrorCode.INVALID_CONFIG);
  });
});

describe('createDefenderClient API that hangs or fails past the caller’s time limit', () => {
  it('checkAccess should say that the Defender API did not answer within the wait, naming it, without the secret', async () => {
    const own = newApp();
    sim.addTenant({ azureTenantId: own.azureTenantId, apps: [own] });
    // The API, not Entra: the token is issued, the device list never answers.
    sim.setFaults(own.azureTenantId, { timeoutRate: 1 });
    const { client, close } = simClient(sim, own, { requestTimeoutMs: 30_000 });
    try {
      const report = await client.checkAccess(AbortSignal.timeout(2_000));
      expect(report).toMatchObject({
        ok: false,
        tokenIssued: true,
        machinesReadable: false,
        error: { code: DefenderErrorCode.UNAVAILABLE },
      });
      // The wait is counted from the device list's call, after the token: up to the 2 s limit.
      expect(report.verdict).toMatch(
        new RegExp(
          `^FAIL: The Defender API \\(${new URL(sim.baseUrl).host}\\) did not answer tenant ${own.azureTenantId} ` +
            'on /api/machines within [12] seconds?: it may be down, or not reachable from here$',
        ),
      );
      expect(JSON.stringify(report)).not.toContain(own.clientSecret);
    } finally {
      sim.removeTenant(own.azureTenantId);
      await close();
    }
  });

  it('checkAccess stopped at its time limit while it waits to retry should keep why it was retrying', async () => {
    const own = newApp();
    sim.addTenant({ azureTenantId: own.azureTenantId, apps: [own] });
    sim.setFaults(own.azureTenantId, { status5xxRate: 1 });
    const { client, close } = simClient(sim, own, {
      retryPolicy: retryPolicy({ maxAttempts: 5, initialDelayMs: 5_000, maxDelayMs: 5_000 }),
      // Full jitter at its top: each retry waits the whole 5 s, far past the 1 s limit.
      random: () => 0.999,
    });
    try {
      const report = await client.checkAccess(AbortSignal.timeout(1_000));
      expect(report).toMatchObject({
        ok: false,
        tokenIssued: true,
        error: { code: DefenderErrorCode.UNAVAILABLE },
      });
      expect(report.verdict).toMatch(
        new RegExp(
          `^FAIL: The Defender API answered 50[03] for tenant ${own.azureTenantId} on /api/machines ` +
            '\\(Microsoft request id [0-9a-f-]{36}\\)$',
        ),
      );
    } finally {
      sim.removeTenant(own.azureTenantId);
      await close();
    }
  });
});

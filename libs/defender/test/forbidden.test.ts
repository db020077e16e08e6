import type { AxiosResponse } from 'axios';
import { type Simulator, startSimulator } from '@urs/simulator';
import {
  type DefenderClient,
  DefenderError,
  DefenderErrorCode,
  type QuotaGate,
  createLocalQuotaGate,
  isSetupErrorCode,
} from '../src';
import { classify } from '../src/answers';
import { type TestApp, failureOf, newApp, simClient } from './support';

let sim: Simulator;
let app: TestApp;

beforeAll(async () => {
  sim = await startSimulator({ quotas: false });
  app = newApp();
  sim.addTenant({ azureTenantId: app.azureTenantId, apps: [app], fleet: { size: 5, seed: 3 } });
});

afterEach(() => sim.setFaults(app.azureTenantId, {}));

afterAll(async () => {
  await sim.close();
});

const failure = (run: (client: DefenderClient) => Promise<unknown>): Promise<DefenderError> =>
  failureOf(sim, app, run);

/** A 403 answer with Microsoft's error body. */
function answer403(code: string, message: string): AxiosResponse<string> {
  return {
    status: 403,
    data: JSON.stringify({ error: { code, message, target: 'c0ffee' } }),
    headers: {},
  } as unknown as AxiosResponse<string>;
}

const CALL = { azureTenantId: 'tenant-1', path: '/api/machines' };

/** A 403 whose body is `data` as sent, whatever it is. */
function forbiddenAnswer(data: string): AxiosResponse<string> {
  return { status: 403, data, headers: {} } as unknown as AxiosResponse<string>;
}

/** An unsigned token carrying `roles` (and `aud` when given), as classify reads them. */
function tokenWith(roles: string[], aud?: string): string {
  const part = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'none' })}.${part({ roles, ...(aud !== undefined ? { aud } : {}) })}.signature`;
}

/** The DefenderError `run` throws. */
function thrownBy(run: () => unknown): DefenderError {
  try {
    run();
  } catch (error) {
    if (error instanceof DefenderError) return error;
    throw error;
  }
  throw new Error('it did not throw');
}

describe('createDefenderClient on 403 DisabledFeature', () => {
  it('getMachineVulnerabilities should name the licence, not the permission, and never retry', async () => {
    sim.setFaults(app.azureTenantId, { disabledFeature: ['vulnerabilities', 'bulk', 'exportFiles'] });
    const id = sim.machines(app.azureTenantId)[0]!.id;
    sim.resetStats();
    const error = await failure((c) => c.getMachineVulnerabilities(id));
    expect(error.code).toBe(DefenderErrorCode.FEATURE_DISABLED);
    expect(error.message).toContain('403 DisabledFeature');
    expect(error.message).toContain('Defender Vulnerability Management');
    expect(error.message).not.toMatch(/grant the WindowsDefenderATP application permission/);
    expect(error.canRetry).toBe(false);
    expect(isSetupErrorCode(error.code)).toBe(true);
    expect(sim.stats().calls.vulnerabilities).toBe(1);
  });

  it('getVulnerabilitiesByMachine should name the licence for the bulk export too', async () => {
    sim.setFaults(app.azureTenantId, { disabledFeature: ['vulnerabilities', 'bulk', 'exportFiles'] });
    const error = await failure((c) => c.getVulnerabilitiesByMachine());
    expect(error.code).toBe(DefenderErrorCode.FEATURE_DISABLED);
    expect(error.message).toContain('Defender Vulnerability Management');
  });

  it('checkAccess should fail with the licence message when the device list is a disabled feature', async () => {
    sim.setFaults(app.azureTenantId, { disabledFeature: ['machines'] });
    const { client, close } = simClient(sim, app);
    try {
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: false,
        tokenIssued: true,
        machinesReadable: false,
        error: { code: DefenderErrorCode.FEATURE_DISABLED },
      });
      expect(report.verdict).toMatch(/^FAIL: .*403 DisabledFeature.*licence/);
      expect(report.verdict).toContain('Permissions and admin consent do not change this');
    } finally {
      await close();
    }
  });
});

describe('checkAccess of a tenant without Defender Vulnerability Management', () => {
  const PLAN_1 = { disabledFeature: ['vulnerabilities', 'bulk', 'exportFiles'] as const };

  it("should fail naming the licence when the listed device's vulnerabilities are a disabled feature", async () => {
    sim.setFaults(app.azureTenantId, { disabledFeature: [...PLAN_1.disabledFeature] });
    const acquired: string[] = [];
    const local = createLocalQuotaGate();
    const quota: QuotaGate = {
      acquire: (tenant, endpoint, signal, maxWaitMs) => {
        acquired.push(endpoint);
        return local.acquire(tenant, endpoint, signal, maxWaitMs);
      },
      block: (tenant, endpoint, ms) => local.block(tenant, endpoint, ms),
    };
    const { client, close } = simClient(sim, app, { quota });
    try {
      sim.resetStats();
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: false,
        tokenIssued: true,
        machinesReadable: true,
        vulnerabilitiesReadable: false,
        permissions: { 'Machine.Read.All': true, 'Vulnerability.Read.All': true },
        error: { code: DefenderErrorCode.FEATURE_DISABLED },
      });
      expect(report.verdict).toMatch(
        /^FAIL: credentials work and the device list is readable, but vulnerabilities are not: The Defender API refused \/api\/machines\/[^/]+\/vulnerabilities .*\(403 DisabledFeature/,
      );
      expect(report.verdict).toContain('Defender for Endpoint Plan 2');
      expect(report.verdict).toContain('Permissions and admin consent do not change this');
      expect(report.verdict).not.toContain('\n');
      // One call of the device list, one of a device's vulnerabilities, both taken from the tenant's quota.
      expect(sim.stats().calls).toMatchObject({ machines: 1, vulnerabilities: 1 });
      expect(acquired).toEqual(['machines', 'vulnerabilities']);
    } finally {
      await close();
    }
  });

  it('should ask the bulk export, not a device, of a tenant whose cycles read it', async () => {
    sim.setFaults(app.azureTenantId, { disabledFeature: ['bulk'] });
    const { client, close } = simClient(sim, app);
    try {
      sim.resetStats();
      const report = await client.checkAccess(undefined, { vulnerabilityMode: 'bulk' });
      expect(report).toMatchObject({
        ok: false,
        machinesReadable: true,
        vulnerabilitiesReadable: false,
        error: { code: DefenderErrorCode.FEATURE_DISABLED },
      });
      expect(report.verdict).toContain('/api/machines/SoftwareVulnerabilitiesByMachine');
      expect(sim.stats().calls).toMatchObject({ machines: 1, bulk: 1 });
      expect(sim.stats().calls.vulnerabilities ?? 0).toBe(0);
    } finally {
      await close();
    }
  });

  it('should ask the bulk export for one row when the fleet is empty', async () => {
    const empty = newApp();
    sim.addTenant({ azureTenantId: empty.azureTenantId, apps: [empty], fleet: { size: 0 } });
    const { client, close } = simClient(sim, empty);
    try {
      expect(await client.checkAccess()).toMatchObject({ ok: true, vulnerabilitiesReadable: true });
      sim.setFaults(empty.azureTenantId, { disabledFeature: [...PLAN_1.disabledFeature] });
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: false,
        machinesReadable: true,
        vulnerabilitiesReadable: false,
        error: { code: DefenderErrorCode.FEATURE_DISABLED },
      });
      expect(report.verdict).toMatch(/SoftwareVulnerabilitiesByMachine .*403 DisabledFeature/);
    } finally {
      sim.removeTenant(empty.azureTenantId);
      await close();
    }
  });
});

describe('classify on 403', () => {
  it("should report DisallowedOperation with Microsoft's reason as a setup error of the tenant, not missing consent", () => {
    let error: unknown;
    try {
      classify(
        answer403('DisallowedOperation', 'Operation is not allowed for this tenant.'),
        CALL,
        'opaque',
        'machines',
      );
    } catch (thrown) {
      error = thrown;
    }
    expect(error).toMatchObject({ code: DefenderErrorCode.OPERATION_DISALLOWED, canRetry: false });
    // Every call of the tenant would meet it: the poller backs the tenant off, the vuln-fetcher stops its cycle.
    expect(isSetupErrorCode((error as DefenderError).code)).toBe(true);
    expect((error as Error).message).toContain(
      '403 DisallowedOperation: Operation is not allowed for this tenant.',
    );
    expect((error as Error).message).not.toMatch(/grant the WindowsDefenderATP application permission/);
  });

  it.each([
    ['Forbidden', 'The application does not have any of the required application permissions.'],
    ['AccessDenied', ''],
  ])('should keep the permission message for %j', (code, message) => {
    let error: unknown;
    try {
      classify(answer403(code, message), CALL, 'opaque', 'machines');
    } catch (thrown) {
      error = thrown;
    }
    expect(error).toMatchObject({ code: DefenderErrorCode.CONSENT_MISSING });
    expect((error as Error).message).toContain(
      'grant the WindowsDefenderATP application permission Machine.Read.All and admin consent',
    );
  });

  it.each([
    ['Machine.Read.All', 'machines', '/api/machines'],
    ['Machine.ReadWrite.All', 'machines', '/api/machines'],
    ['Vulnerability.Read.All', 'vulnerabilities', '/api/machines/m1/vulnerabilities'],
  ] as const)(
    'should not ask for a permission the token carries (%s), quoting Microsoft’s reason instead',
    (role, endpoint, path) => {
      const message = 'The application does not have any of the required application permissions.';
      const error = thrownBy(() =>
        classify(
          answer403('Forbidden', message),
          { ...CALL, path },
          tokenWith([role, 'Alert.Read.All']),
          endpoint,
        ),
      );
      expect(error).toMatchObject({ code: DefenderErrorCode.ACCESS_REFUSED, canRetry: false });
      expect(isSetupErrorCode(error.code)).toBe(true);
      expect(error.message).toContain(`403 Forbidden: ${message}`);
      expect(error.message).toContain(`the token carries ${role}`);
      expect(error.message).not.toMatch(/grant the WindowsDefenderATP application permission/);
    },
  );

  it.each([
    ['an empty body', '', 'the answer was empty'],
    [
      'JSON without an error code',
      '{"error":{"code":"","message":""}}',
      'the answer begins: {"error":{"code":"","message":""}}',
    ],
  ])(
    'should report a 403 with %s as refused in front of the API, not missing consent',
    (_what, data, shown) => {
      const error = thrownBy(() =>
        classify(forbiddenAnswer(data), CALL, tokenWith(['Machine.Read.All']), 'machines'),
      );
      expect(error).toMatchObject({ code: DefenderErrorCode.REQUEST_REJECTED, canRetry: false });
      expect(error.message).toBe(
        "The Defender API answered 403 for tenant tenant-1 on /api/machines without Microsoft's error body: a " +
          `proxy, firewall or gateway in front of it refused the call, not a missing permission (${shown})`,
      );
    },
  );

  it('should give at most 300 characters of a page’s text, without the token or a quoted secret', () => {
    const token = tokenWith(['Machine.Read.All']);
    const page =
      `<html><head><title>Request blocked</title><style>p { color: red }</style></head><body>` +
      `<p>Authorization: Bearer ${token}</p><p>{"clientSecret": "Zx8Q~leaked"}</p>` +
      `<p>${'blocked by policy '.repeat(40)}</p></body></html>`;
    const error = thrownBy(() => classify(forbiddenAnswer(page), CALL, token, 'machines'));
    const body = error.details['body'] as string;
    expect(body).toMatch(
      /^Request blocked Authorization: Bearer \[redacted\] \{"clientSecret": "\[redacted\]"\} blocked/,
    );
    expect(body.length).toBeLessThanOrEqual(300);
    expect(error.message).toContain(`(the answer begins: ${body})`);
    expect(JSON.stringify(error)).not.toContain(token);
    expect(error.message).not.toContain('Zx8Q~leaked');
  });
  it.each([
    [400, 'BadRequest'],
    [403, 'Forbidden'],
    [500, 'InternalServerError'],
  ])("should keep Microsoft's error message of a %s without the token or a quoted secret", (status, code) => {
    const token = tokenWith(['Machine.Read.All']);
    const message = `Invalid header Authorization: Bearer ${token} {"clientSecret": "Zx8Q~leaked"}`;
    const error = thrownBy(() =>
      classify({ ...answer403(code, message), status } as AxiosResponse<string>, CALL, token, 'machines'),
    );
    expect(error.details['api']).toMatch(
      new RegExp(
        `^${code}: Invalid header Authorization: Bearer \\[redacted\\] \\{"clientSecret": "\\[redacted\\]"\\}`,
      ),
    );
    expect(JSON.stringify(error)).not.toContain(token);
    expect(error.message).not.toContain(token.slice(0, 40));
    expect(JSON.stringify(error)).not.toContain('Zx8Q~leaked');
  });

  it("should not keep the start of a token that Microsoft's error message cuts", () => {
    const token = tokenWith(['Machine.Read.All']);
    // The token begins where the kept message would end if it were cut before the token was taken out.
    const message = `${'x'.repeat(180)} Bearer ${token}`;
    const error = thrownBy(() =>
      classify(
        { ...answer403('BadRequest', message), status: 400 } as AxiosResponse<string>,
        CALL,
        token,
        'machines',
      ),
    );
    expect(error.details['api']).toMatch(/Bearer \[redacted\]$/);
    expect(JSON.stringify(error)).not.toContain(token.slice(0, 12));
  });
});

describe("classify on 403 with the token's audience", () => {
  it.each([
    'https://graph.microsoft.com',
    'https://graph.microsoft.com/',
    '00000003-0000-0000-c000-000000000000',
    'https://API.Security.Microsoft.com',
  ])('should name the audience of a token of another API (%s), not ask for permissions', (aud) => {
    const error = thrownBy(() =>
      classify(answer403('Forbidden', 'Forbidden'), CALL, tokenWith([], aud), 'machines'),
    );
    expect(error).toMatchObject({ code: DefenderErrorCode.CONSENT_MISSING, details: { audience: aud } });
    expect(error.message).toContain(`the token was issued for ${aud}, not for WindowsDefenderATP`);
    expect(error.message).not.toMatch(/grant the WindowsDefenderATP application permission/);
  });

  // WindowsDefenderATP's app id (the `aud` of a token asked with scope `fc780465-…/.default`), its URI in the
  // app-id form, and the resource of an operator's scope override (URS_DEFENDER_SCOPE*) not among those known.
  it.each([
    'fc780465-2017-40d4-a0c5-307022471b92',
    'api://fc780465-2017-40d4-a0c5-307022471b92',
    'https://wdatp.gov.example',
  ])('should not take a token of %s for another API’s, but read its roles', (aud) => {
    const lacking = thrownBy(() =>
      classify(answer403('Forbidden', 'Forbidden'), CALL, tokenWith(['Alert.Read.All'], aud), 'machines'),
    );
    expect(lacking).toMatchObject({ code: DefenderErrorCode.CONSENT_MISSING });
    expect(lacking.details).not.toHaveProperty('audience');
    expect(lacking.message).toContain(
      'grant the WindowsDefenderATP application permission Machine.Read.All and admin consent',
    );
    expect(lacking.message).not.toContain('issued for');
    const held = thrownBy(() =>
      classify(answer403('Forbidden', 'Forbidden'), CALL, tokenWith(['Machine.Read.All'], aud), 'machines'),
    );
    expect(held).toMatchObject({ code: DefenderErrorCode.ACCESS_REFUSED });
    expect(held.message).toContain('the token carries Machine.Read.All');
  });
});

describe('classify keeps Microsoft’s request id', () => {
  it("should take it from the error body's target", () => {
    const error = thrownBy(() =>
      classify(answer403('DisabledFeature', "Tenant feature isn't enabled."), CALL, 'opaque', 'machines'),
    );
    expect(error.details['requestId']).toBe('c0ffee');
    expect(error.message).toMatch(/do not change this \(Microsoft request id c0ffee\)\.$/);
  });

  it.each(['x-ms-request-id', 'request-id'])(
    'should take it from %s when the body has no target',
    (header) => {
      const response = {
        status: 500,
        data: JSON.stringify({ error: { code: 'InternalServerError', message: '' } }),
        headers: { [header]: '7d0c-11' },
      } as unknown as AxiosResponse<string>;
      const error = thrownBy(() => classify(response, CALL, 'opaque', 'machines'));
      expect(error.details['requestId']).toBe('7d0c-11');
      expect(error.message).toBe(
        'The Defender API answered 500 for tenant tenant-1 on /api/machines (Microsoft request id 7d0c-11)',
      );
    },
  );

  it('should not carry the token or a quoted secret in it', () => {
    const token = tokenWith([]);
    const response = {
      status: 503,
      data: JSON.stringify({ error: { code: 'ServiceUnavailable', message: '', target: `|${token}` } }),
      headers: { 'x-ms-request-id': '{"secret": "hunter22"}' },
    } as unknown as AxiosResponse<string>;
    const error = thrownBy(() => classify(response, CALL, token, 'machines'));
    expect(error.details['requestId']).toBe('|[redacted]');
    const fromHeader = thrownBy(() =>
      classify({ ...response, data: '' } as AxiosResponse<string>, CALL, token, 'machines'),
    );
    expect(fromHeader.details['requestId']).toBe('{"secret": "[redacted]"}');
  });
});

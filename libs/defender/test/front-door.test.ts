import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Simulator, startSimulator } from '@urs/simulator';
import { capturingLogger, type LogLine } from '@urs/testkit';
import {
  type DefenderError,
  DefenderErrorCode,
  type QuotaGate,
  createLocalQuotaGate,
  isSetupErrorCode,
} from '../src';
import { type TestApp, newApp, simClient } from './support';

// The answers of Azure's front end before the Defender API (429s without Retry-After or with a date, 5xx pages
// that are not MDE's JSON, gzipped bodies) and next links naming another host, read by the client end to end
// against the simulator over TLS.

let sim: Simulator;
let app: TestApp;

beforeAll(async () => {
  sim = await startSimulator({ quotas: false });
  app = newApp();
  sim.addTenant({ azureTenantId: app.azureTenantId, apps: [app], fleet: { size: 40, seed: 23 } });
}, 30_000);

afterAll(async () => {
  await sim.close();
});

afterEach(() => {
  sim.setFaults(app.azureTenantId, {});
});

/** A local quota gate that also records every block a 429 asked for. */
function recordingQuota(blocks: { endpoint: string; ms: number }[]): QuotaGate {
  const local = createLocalQuotaGate();
  return {
    acquire: (...args) => local.acquire(...args),
    block: async (tenant, endpoint, ms) => {
      blocks.push({ endpoint, ms });
      await local.block(tenant, endpoint, ms);
    },
  };
}

describe('createDefenderClient when the API throttles', () => {
  it('listMachines should wait at least its floor for a 429 without Retry-After, then retry', async () => {
    sim.setFaults(app.azureTenantId, { throttledCalls: 2, retryAfter: 'none' });
    const blocks: { endpoint: string; ms: number }[] = [];
    const { client, close } = simClient(sim, app, {
      quota: recordingQuota(blocks),
      throttleWaitWithoutRetryAfterMs: 150,
    });
    try {
      sim.resetStats();
      await expect(client.listMachines()).resolves.toHaveLength(40);
      const throttledWalk = sim.stats().calls.machines;
      sim.resetStats();
      await client.listMachines();
      // The same walk as without the 429s, each of them retried once.
      expect(throttledWalk).toBe((sim.stats().calls.machines ?? 0) + 2);
      // Each wait is the floor, as the support helper's backoff (10–100 ms, full jitter) is shorter.
      expect(blocks).toEqual([
        { endpoint: 'machines', ms: 150 },
        { endpoint: 'machines', ms: 150 },
      ]);
    } finally {
      await close();
    }
  });

  it('getMachineVulnerabilities should wait its backoff when longer than the floor of a 429 without Retry-After', async () => {
    const blocks: { endpoint: string; ms: number }[] = [];
    const { client, close } = simClient(sim, app, {
      quota: recordingQuota(blocks),
      throttleWaitWithoutRetryAfterMs: 1,
      // The longest backoff of the support helper's policy (100 ms): a jitter draw just under 1.
      random: () => 0.999,
    });
    try {
      sim.setFaults(app.azureTenantId, { throttledCalls: 1, retryAfter: 'none' });
      const id = sim.machines(app.azureTenantId)[0]?.id as string;
      await expect(client.getMachineVulnerabilities(id)).resolves.toBeDefined();
      expect(blocks).toHaveLength(1);
      expect(blocks[0]!.ms).toBeGreaterThan(1);
    } finally {
      await close();
    }
  });

  it('getMachineVulnerabilities should wait until the HTTP date a 429’s Retry-After gives, then retry', async () => {
    sim.setFaults(app.azureTenantId, { throttledCalls: 1, retryAfter: 'httpDate', throttleRetryAfterSec: 1 });
    const blocks: { endpoint: string; ms: number }[] = [];
    const { client, close } = simClient(sim, app, { quota: recordingQuota(blocks) });
    try {
      const id = sim.machines(app.azureTenantId)[0]?.id as string;
      await expect(client.getMachineVulnerabilities(id)).resolves.toEqual(expect.any(Array));
      expect(sim.stats().faultsByKind.throttled).toBeGreaterThanOrEqual(1);
      // The date is at least a second after the 429 was sent, in whole seconds: more than the backoff's
      // 100 ms, at most two seconds.
      expect(blocks).toHaveLength(1);
      expect(blocks[0]?.ms).toBeGreaterThan(100);
      expect(blocks[0]?.ms).toBeLessThanOrEqual(2_000);
    } finally {
      await close();
    }
  });

  it('getMachineVulnerabilities should cap a Retry-After date a day away at an hour and fail THROTTLED when it may not wait that long', async () => {
    sim.setFaults(app.azureTenantId, {
      throttledCalls: 1,
      retryAfter: 'httpDate',
      throttleRetryAfterSec: 86_400,
    });
    const { client, close } = simClient(sim, app, { maxThrottleWaitMs: 60_000 });
    try {
      const id = sim.machines(app.azureTenantId)[0]?.id as string;
      const error = await client.getMachineVulnerabilities(id).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toMatchObject({
        code: DefenderErrorCode.THROTTLED,
        canRetry: true,
        retryAfterMs: 3_600_000,
        details: { retryAfter: expect.stringMatching(/ GMT$/) },
      });
    } finally {
      await close();
    }
  });
});

describe('createDefenderClient when a gateway answers 5xx without MDE’s error body', () => {
  it.each([
    ['an empty body', 'empty', 502],
    ['an HTML page', 'html', 504],
  ] as const)(
    'listMachines should retry a 5xx with %s and fail UNAVAILABLE naming the status, without the body',
    async (_what, body, status) => {
      sim.setFaults(app.azureTenantId, {
        status5xxRate: 1,
        status5xxStatuses: [status],
        status5xxBody: body,
      });
      const lines: LogLine[] = [];
      const { client, close } = simClient(sim, app, { logger: capturingLogger(lines) });
      try {
        sim.resetStats();
        const error = await client.listMachines().then(
          () => undefined,
          (e: unknown) => e as Error & { details: Record<string, unknown> },
        );
        expect(error).toMatchObject({
          code: DefenderErrorCode.UNAVAILABLE,
          canRetry: true,
          message: `The Defender API answered ${status} for tenant ${app.azureTenantId} on /api/machines`,
        });
        // The support helper's policy: 6 attempts.
        expect(sim.stats().calls.machines).toBe(6);
        expect(JSON.stringify(error?.details)).not.toMatch(/<|html/i);
        expect(JSON.stringify(lines)).not.toMatch(/<|html/i);
        expect(lines.filter((l) => l.message === 'defender: retrying a call')).toHaveLength(5);
      } finally {
        await close();
      }
    },
  );

  it('getMachineVulnerabilities should fail UNAVAILABLE naming the status when every answer is a gateway’s HTML page', async () => {
    sim.setFaults(app.azureTenantId, { status5xxRate: 1, status5xxStatuses: [502], status5xxBody: 'html' });
    const { client, close } = simClient(sim, app);
    try {
      const id = sim.machines(app.azureTenantId)[0]?.id as string;
      await expect(client.getMachineVulnerabilities(id)).rejects.toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
        message: `The Defender API answered 502 for tenant ${app.azureTenantId} on /api/machines/${id}/vulnerabilities`,
      });
    } finally {
      await close();
    }
  });
});

describe('createDefenderClient when something in front of the API answers 403 without MDE’s error body', () => {
  it.each([
    [
      'an HTML page',
      'html',
      'the answer begins: 403 Forbidden 403 Forbidden Microsoft-Azure-Application-Gateway/v2',
    ],
    ['an empty body', 'empty', 'the answer was empty'],
  ] as const)(
    'listMachines should fail REQUEST_REJECTED on a 403 with %s, naming the front end and the answer, not consent',
    async (_what, body, shown) => {
      sim.setFaults(app.azureTenantId, { gateway403: body });
      const { client, close } = simClient(sim, app);
      try {
        sim.resetStats();
        const error = await client.listMachines().then(
          () => undefined,
          (e: unknown) => e as DefenderError,
        );
        expect(error).toMatchObject({ code: DefenderErrorCode.REQUEST_REJECTED, canRetry: false });
        expect(error?.message).toBe(
          `The Defender API answered 403 for tenant ${app.azureTenantId} on /api/machines without Microsoft's ` +
            `error body: a proxy, firewall or gateway in front of it refused the call, not a missing permission (${shown})`,
        );
        expect(isSetupErrorCode(error!.code)).toBe(false);
        // Not retried: a refusal, as every 403.
        expect(sim.stats().calls.machines).toBe(1);
        expect(JSON.stringify(error?.details)).not.toMatch(/<|html/i);
      } finally {
        await close();
      }
    },
  );

  it('checkAccess should say the call was refused in front of the API, not that a permission is missing', async () => {
    sim.setFaults(app.azureTenantId, { gateway403: 'html' });
    const { client, close } = simClient(sim, app);
    try {
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: false,
        machinesReadable: false,
        permissions: { 'Machine.Read.All': true, 'Vulnerability.Read.All': true },
        error: { code: DefenderErrorCode.REQUEST_REJECTED },
      });
      expect(report.verdict).toMatch(/^FAIL: The Defender API answered 403 .* a proxy, firewall or gateway/);
      expect(report.verdict).not.toMatch(/grant|consent/);
    } finally {
      await close();
    }
  });
});

describe('createDefenderClient when something in front of the API answers 404 without MDE’s error body', () => {
  it.each([
    [
      'an HTML page',
      'html',
      'the answer begins: 404 Not Found 404 Not Found Microsoft-Azure-Application-Gateway/v2',
    ],
    ['an empty body', 'empty', 'the answer was empty'],
  ] as const)(
    'listMachines should fail retryably on a first page answered 404 with %s, not read it as no devices',
    async (_what, body, shown) => {
      sim.setFaults(app.azureTenantId, { gateway404: body });
      const { client, close } = simClient(sim, app);
      try {
        sim.resetStats();
        const error = await client.listMachines().then(
          () => undefined,
          (e: unknown) => e as DefenderError,
        );
        expect(error).toMatchObject({ code: DefenderErrorCode.UNAVAILABLE, canRetry: true });
        expect(error?.message).toBe(
          `The Defender API answered 404 for tenant ${app.azureTenantId} on /api/machines without Microsoft's ` +
            'error body: a proxy or gateway in front of it, or a wrong API base address, did not find the ' +
            `call; it is tried again rather than taken for a resource that does not exist (${shown})`,
        );
        // Retried as a passing failure: 1 call and 5 retries.
        expect(sim.stats().calls.machines).toBe(6);
        expect(JSON.stringify(error?.details)).not.toMatch(/<|html/i);
      } finally {
        await close();
      }
    },
  );

  it('listMachines should count 404s without MDE’s error body as failures of the tenant’s API, held back as 5xx are', async () => {
    sim.setFaults(app.azureTenantId, { gateway404: 'html' });
    // Every call counts as slow: 3 failures in a row hold the tenant's calls back.
    const { client, close } = simClient(sim, app, { health: { slowCallMs: 0, holdBackAfter: 3 } });
    try {
      sim.resetStats();
      const error = await client.listMachines().then(
        () => undefined,
        (e: unknown) => e as DefenderError,
      );
      expect(error).toMatchObject({ code: DefenderErrorCode.UNAVAILABLE });
      expect(error?.message).toMatch(
        /failed 3 calls in a row \(last: answered 404\); its calls are held back/,
      );
      expect(sim.stats().calls.machines).toBe(3);
    } finally {
      await close();
    }
  });

  it('checkAccess should fail on a device list answered 404 without MDE’s error body', async () => {
    sim.setFaults(app.azureTenantId, { gateway404: 'html' });
    const { client, close } = simClient(sim, app);
    try {
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: false,
        machinesReadable: false,
        noDevices: false,
        error: { code: DefenderErrorCode.UNAVAILABLE },
      });
      expect(report.verdict).toMatch(
        /^FAIL: The Defender API answered 404 .* without Microsoft's error body/,
      );
    } finally {
      await close();
    }
  });

  it('checkAccess should say in its verdict that the device list is empty when MDE answers 404 for it', async () => {
    const empty = newApp();
    sim.addTenant({ azureTenantId: empty.azureTenantId, apps: [empty] });
    const { client, close } = simClient(sim, empty);
    try {
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: true,
        machinesReadable: true,
        vulnerabilitiesReadable: true,
        noDevices: true,
      });
      expect(report.verdict).toMatch(/^OK: credentials and consent work; .* but the device list is empty:/);
      expect(report.verdict).toContain('404 ResourceNotFound');
    } finally {
      await close();
    }
  });

  it('checkAccess should ask the device list once more after MDE’s 404, and not call a fleet that lists devices then empty', async () => {
    sim.setFaults(app.azureTenantId, { notFoundCalls: 1 });
    const lines: LogLine[] = [];
    const { client, close } = simClient(sim, app, { logger: capturingLogger(lines) });
    try {
      sim.resetStats();
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: true,
        machinesReadable: true,
        vulnerabilitiesReadable: true,
        noDevices: false,
      });
      expect(report.verdict).not.toContain('empty');
      // The 404, then the page that lists a device, whose vulnerabilities are asked for as a per-device cycle does.
      expect(sim.stats().calls).toMatchObject({ machines: 2, vulnerabilities: 1 });
      expect(sim.stats().faultsByKind).toMatchObject({ notFound: 1 });
      expect(lines).toContainEqual(
        expect.objectContaining({
          level: 'warn',
          message: 'defender: /api/machines answered 404 for its first page, then listed devices',
        }),
      );
    } finally {
      await close();
    }
  });

  it('checkAccess should say the device list is empty when MDE answers 404 for it twice in a row', async () => {
    sim.setFaults(app.azureTenantId, { notFoundCalls: 2 });
    const { client, close } = simClient(sim, app);
    try {
      sim.resetStats();
      const report = await client.checkAccess();
      expect(report).toMatchObject({ ok: true, machinesReadable: true, noDevices: true });
      expect(report.verdict).toMatch(/^OK: credentials and consent work; .* but the device list is empty:/);
      expect(sim.stats().calls.machines).toBe(2);
    } finally {
      await close();
    }
  });
});

describe('createDefenderClient on MDE’s error answers', () => {
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

  it('listMachines should keep Microsoft’s request id of a 5xx in the error and in the retry lines', async () => {
    sim.setFaults(app.azureTenantId, { status5xxRate: 1, status5xxStatuses: [503], status5xxBody: 'mde' });
    const lines: LogLine[] = [];
    const { client, close } = simClient(sim, app, { logger: capturingLogger(lines) });
    try {
      const error = await client.listMachines().then(
        () => undefined,
        (e: unknown) => e as DefenderError,
      );
      const requestId = error?.details['requestId'] as string;
      expect(requestId).toMatch(UUID);
      expect(error?.message).toBe(
        `The Defender API answered 503 for tenant ${app.azureTenantId} on /api/machines ` +
          `(Microsoft request id ${requestId})`,
      );
      const retries = lines.filter((l) => l.message === 'defender: retrying a call');
      expect(retries).toHaveLength(5);
      for (const line of retries) expect(line['requestId']).toMatch(UUID);
    } finally {
      await close();
    }
  });

  it('checkAccess should give Microsoft’s request id of a 403 DisabledFeature in its verdict', async () => {
    sim.setFaults(app.azureTenantId, { disabledFeature: ['machines'] });
    const { client, close } = simClient(sim, app);
    try {
      const report = await client.checkAccess();
      expect(report.error?.code).toBe(DefenderErrorCode.FEATURE_DISABLED);
      expect(report.verdict).toMatch(
        /Permissions and admin consent do not change this \(Microsoft request id [0-9a-f-]{36}\)\.$/,
      );
    } finally {
      await close();
    }
  });
});

describe('createDefenderClient when a next link names another host', () => {
  let elsewhere: Server;
  const seen: IncomingHttpHeaders[] = [];
  beforeAll(async () => {
    // Where a next link points: any request it gets is a call that left the tenant's API host.
    elsewhere = createServer((req, res) => {
      seen.push(req.headers);
      res.writeHead(500).end();
    });
    await new Promise<void>((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => elsewhere.close(() => resolve()));
  });

  it.each([
    ['the legacy global host', () => 'https://api.securitycenter.microsoft.com'],
    ['a host of no Microsoft API', () => `http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}`],
  ])(
    'readVulnerabilitiesByMachine should follow a link to %s on its own API host, sending its token nowhere else',
    async (_what, origin) => {
      const { client, close } = simClient(sim, app);
      try {
        const expected = await client.readVulnerabilitiesByMachine(() => undefined, { pageSize: 50 });
        expect(expected.pages).toBeGreaterThan(1);
        sim.setFaults(app.azureTenantId, { nextLinkOrigin: origin() });
        sim.resetStats();
        const rows: string[] = [];
        const read = await client.readVulnerabilitiesByMachine((deviceId) => rows.push(deviceId), {
          pageSize: 50,
        });
        expect(read).toEqual(expected);
        expect(rows).toHaveLength(expected.rows);
        // Every page came from the simulator (the tenant's API host), none from the host the links name.
        expect(sim.stats().calls.bulk).toBe(expected.pages);
        expect(seen).toHaveLength(0);
      } finally {
        await close();
      }
    },
  );
});

describe('createDefenderClient when answers are gzipped', () => {
  it('should read the listing, a device’s vulnerabilities and the bulk export gzipped as it reads them plain', async () => {
    const { client, close } = simClient(sim, app);
    try {
      const id = sim.machines(app.azureTenantId)[0]?.id as string;
      const plain = {
        machines: await client.listMachines(),
        vulnerabilities: await client.getMachineVulnerabilities(id),
        bulk: await client.getVulnerabilitiesByMachine({ pageSize: 1_000 }),
      };
      sim.setFaults(app.azureTenantId, { gzip: true });
      sim.resetStats();
      const zipped = {
        machines: await client.listMachines(),
        vulnerabilities: await client.getMachineVulnerabilities(id),
        bulk: await client.getVulnerabilitiesByMachine({ pageSize: 1_000 }),
      };
      expect(zipped).toEqual(plain);
      expect(plain.machines).toHaveLength(40);
      expect(plain.bulk.devices.size).toBeGreaterThan(0);
      // Every answer was gzipped: the client asked for it on every call.
      const stats = sim.stats();
      const calls =
        (stats.calls.machines ?? 0) + (stats.calls.vulnerabilities ?? 0) + (stats.calls.bulk ?? 0);
      expect(calls).toBeGreaterThanOrEqual(3);
      expect(stats.faultsByKind.gzip).toBe(calls);
    } finally {
      await close();
    }
  });
});

import { randomBytes, randomUUID } from 'node:crypto';
import { waitFor } from '@urs/testkit';
import { api, type ServiceProcess } from '../../poller/test/support/services';
import { buildServices, createTestStack, portFrom, type TestStack } from '../../poller/test/support/stack';

/** The stop's whole budget here; the REST server's share of it for requests in flight is a third. */
const SHUTDOWN_TIMEOUT_MS = 6_000;

// The registrar as its own process, stopped while an access test waits on a Microsoft that never answers.
describe('registrar: stopping', () => {
  let stack: TestStack;
  let registrar: ServiceProcess;

  beforeAll(async () => {
    buildServices();
    stack = await createTestStack({ intervalUnitMs: 60_000, leaseMs: 30_000 });
  }, 120_000);

  afterAll(async () => {
    await stack?.close();
  });

  it('SIGTERM during an access test should answer it 503 and exit 0 within URS_SHUTDOWN_TIMEOUT_MS', async () => {
    registrar = await stack.start('registrar', { URS_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) });
    const baseUrl = `http://127.0.0.1:${portFrom(registrar.lines, 'REST listening', 'httpPort')}`;
    const tenant = {
      azureTenantId: randomUUID(),
      clientId: randomUUID(),
      clientSecret: `S3cr3t~${randomBytes(12).toString('hex')}`,
    };
    stack.sim.addTenant({
      azureTenantId: tenant.azureTenantId,
      apps: [{ clientId: tenant.clientId, clientSecret: tenant.clientSecret }],
      fleet: { size: 1 },
    });
    // The token is issued; the page of devices the test reads is never answered (URS_ACCESS_TEST_TIMEOUT_MS
    // is 30 s, far past the stop's budget).
    stack.sim.setFaults(tenant.azureTenantId, { timeoutRate: 1 });
    const put = await api(baseUrl, stack.apiToken, 'PUT', '/v1/tenants/stop-a/defender', {
      enabled: true,
      ...tenant,
      pollIntervalMinutes: 60,
    });
    expect(put.status).toBe(201);

    const test = api(baseUrl, stack.apiToken, 'POST', '/v1/tenants/stop-a/defender/test').catch(
      (error: Error) => ({ status: 0, body: undefined, text: error.message }),
    );
    // The check is waiting on Microsoft once the simulator left its page of devices unanswered.
    await waitFor(() => (stack.sim.stats().faultsByKind['timeout'] ?? 0) > 0, { timeoutMs: 10_000 });
    const exited = new Promise<number | null>((resolve) =>
      registrar.process.once('exit', (code) => resolve(code)),
    );
    registrar.process.kill('SIGTERM');
    const code = await exited;
    const answer = await test;

    // Within URS_SHUTDOWN_TIMEOUT_MS by the registrar's own clock: past it, it exits 1 saying so.
    expect({ code, lines: code === 0 ? [] : registrar.lines.slice(-20) }).toEqual({ code: 0, lines: [] });
    expect(registrar.lines.filter((line) => line.includes('graceful stop timed out'))).toEqual([]);
    expect(answer.status).toBe(503);
    expect(answer.body).toMatchObject({ error: { code: 'SHUTTING_DOWN' } });
  });
});

import https from 'node:https';
import { performance } from 'node:perf_hooks';
import { startSimulator, type Simulator } from '@urs/simulator';
import { CLIENT_ID, getToken, request, SECRET, TENANT } from './helpers';

describe('call statistics', () => {
  let sim: Simulator;

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false });
    sim.addTenant({
      azureTenantId: TENANT,
      apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
      fleet: { size: 30 },
    });
  }, 30_000);

  afterAll(() => sim.close());

  test('stats should count calls per endpoint and tenant and the peak concurrency', async () => {
    const token = await getToken(sim);
    sim.resetStats();
    const began = Date.now();
    // Each answer held 3 s: the seven requests that take the seven sockets all arrive long before the first of
    // them is answered, however slowly a loaded machine makes their connections.
    sim.setLatency({ meanMs: 3_000, jitterMs: 20 });
    const agent = new https.Agent({ ca: sim.caPem, keepAlive: true, maxSockets: 7 });
    const ids = sim
      .machines(TENANT)
      .map((m) => m.id)
      .slice(0, 14);
    // The client's own time for the answers, each from when its request had a socket to when its answer ended.
    let clientMs = 0;
    const fetchOne = (id: string) =>
      new Promise<number>((resolve, reject) => {
        let sentAt = 0;
        https
          .get(
            `${sim.baseUrl}/api/machines/${id}/vulnerabilities`,
            { agent, headers: { authorization: `Bearer ${token}` } },
            (res) => {
              res.resume();
              res.on('end', () => {
                clientMs += performance.now() - sentAt;
                resolve(res.statusCode ?? 0);
              });
            },
          )
          .on('socket', () => (sentAt = performance.now()))
          .on('error', reject);
      });
    const statuses = await Promise.all(ids.map(fetchOne));
    agent.destroy();
    sim.setLatency({ meanMs: 0 });
    expect(statuses.every((s) => s === 200)).toBe(true);
    await request(sim, '/api/machines?$top=5', { token });
    const stats = sim.stats();
    expect(stats.calls).toEqual({ vulnerabilities: 14, machines: 1 });
    expect(stats.callsByTenant[TENANT]).toEqual({ vulnerabilities: 14, machines: 1 });
    // Seven sockets each hold one ~3 s request, so exactly seven overlap.
    expect(stats.peakConcurrency).toBe(7);
    expect(stats.peakConcurrencyByTenant[TENANT]).toBe(7);
    expect(stats.inFlight).toBe(0);
    // Each answer took the configured 3 s ± 20 ms at least, and no longer than the client waited for it.
    const served = stats.serviceTimeByKind['vulnerabilities'];
    expect(served?.answered).toBe(14);
    expect((served?.totalMs ?? 0) / 14).toBeGreaterThanOrEqual(2_979);
    expect(served?.totalMs).toBeLessThanOrEqual(clientMs);
    expect(stats.serviceTimeByKind['machines']?.answered).toBe(1);
    // The first vulnerability call arrived after the test began and before the machines call.
    const firstVuln = stats.firstCallAtByKind['vulnerabilities'] as number;
    expect(firstVuln).toBeGreaterThanOrEqual(began);
    expect(firstVuln).toBeLessThan(stats.firstCallAtByKind['machines'] as number);
    sim.resetStats();
    expect(sim.stats()).toMatchObject({
      calls: {},
      peakConcurrency: 0,
      throttled: 0,
      faultsInjected: 0,
      serviceTimeByKind: {},
      firstCallAtByKind: {},
    });
  }, 30_000);
});

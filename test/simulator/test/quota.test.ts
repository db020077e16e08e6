import { MDE_QUOTAS, startSimulator, type Simulator } from '@urs/simulator';
import { SlidingWindow } from '../src/quota';
import { CLIENT_ID, getToken, request, SECRET, TENANT } from './helpers';

const OTHER_TENANT = '99999999-aaaa-4bbb-8ccc-000000000009';
/** A second application registered in TENANT. */
const OTHER_APP = '77777777-aaaa-4bbb-8ccc-000000000007';

describe('SlidingWindow', () => {
  test('tryAcquire should allow perMinute calls, then name the wait until the oldest leaves the minute', () => {
    const window = new SlidingWindow({ perMinute: 3, perHour: 5 });
    expect([window.tryAcquire(0), window.tryAcquire(1000), window.tryAcquire(2000)]).toEqual([0, 0, 0]);
    expect(window.tryAcquire(2500)).toBe(58);
    expect(window.tryAcquire(60_000)).toBe(0);
    expect(window.tryAcquire(61_000)).toBe(0);
    // Five calls within the hour: the hourly limit now governs until the first call is an hour old.
    expect(window.tryAcquire(200_000)).toBe(3600 - 200);
    expect(window.tryAcquire(3_600_000)).toBe(0);
  });

  test('tryAcquire should name the wait of a shorter minute window, and keep the hour an hour', () => {
    const window = new SlidingWindow({ perMinute: 2, perHour: 3 }, 5_000);
    expect([window.tryAcquire(0), window.tryAcquire(100)]).toEqual([0, 0]);
    expect(window.tryAcquire(1_000)).toBe(4);
    expect(window.tryAcquire(5_000)).toBe(0);
    expect(window.tryAcquire(20_000)).toBe(3600 - 20);
  });
});

describe('quota enforcement', () => {
  let sim: Simulator;

  // A simulator of each test's own: its quotas are whole and its throttled count 0, whichever tests ran before.
  beforeEach(async () => {
    sim = await startSimulator();
    sim.addTenant({
      azureTenantId: TENANT,
      apps: [
        { clientId: CLIENT_ID, clientSecret: SECRET },
        { clientId: OTHER_APP, clientSecret: SECRET },
      ],
      fleet: { size: 20 },
    });
    sim.addTenant({
      azureTenantId: OTHER_TENANT,
      apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
      fleet: { size: 20 },
    });
  });

  afterEach(() => sim.close());

  test('per-device vulnerabilities should answer 429 with Retry-After after 50 calls in a minute, per tenant', async () => {
    const token = await getToken(sim);
    const id = sim.machines(TENANT)[0]?.id as string;
    const statuses: number[] = [];
    for (let i = 0; i < MDE_QUOTAS.vulnerabilities.perMinute + 5; i++) {
      statuses.push((await request(sim, `/api/machines/${id}/vulnerabilities`, { token })).status);
    }
    expect(statuses.slice(0, 50).every((s) => s === 200)).toBe(true);
    expect(statuses.slice(50)).toEqual([429, 429, 429, 429, 429]);
    const throttled = await request(sim, `/api/machines/${id}/vulnerabilities`, { token });
    expect(throttled.status).toBe(429);
    expect(Number(throttled.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(throttled.headers['retry-after'])).toBeLessThanOrEqual(60);
    expect(throttled.json.error.code).toBe('TooManyRequests');
    expect(sim.stats().throttled).toBe(6);
    expect(sim.stats().throttledByTenant[TENANT]).toBe(6);

    // Another endpoint and another tenant have their own windows.
    expect((await request(sim, '/api/machines?$top=5', { token })).status).toBe(200);
    const other = await getToken(sim, OTHER_TENANT);
    expect(
      (
        await request(sim, `/api/machines/${sim.machines(OTHER_TENANT)[0]?.id}/vulnerabilities`, {
          token: other,
        })
      ).status,
    ).toBe(200);
  });

  test('two apps of one tenant should each have the quota of their own, as Microsoft counts per application and tenant', async () => {
    const token = await getToken(sim);
    const id = sim.machines(TENANT)[0]?.id as string;
    const path = `/api/machines/${id}/vulnerabilities`;
    for (let i = 0; i < MDE_QUOTAS.vulnerabilities.perMinute; i++)
      expect((await request(sim, path, { token })).status).toBe(200);
    expect((await request(sim, path, { token })).status).toBe(429);

    // The other app's token (its `appid`) counts in a window of its own; the first app's stays spent.
    const other = await getToken(sim, TENANT, OTHER_APP);
    expect((await request(sim, path, { token: other })).status).toBe(200);
    expect((await request(sim, path, { token })).status).toBe(429);
  });

  test('quotaMinuteMs should shorten the minute window and the Retry-After it names', async () => {
    const short = await startSimulator({ quotaMinuteMs: 3_000 });
    try {
      short.addTenant({
        azureTenantId: TENANT,
        apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
        fleet: { size: 1 },
      });
      const token = await getToken(short);
      const path = '/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=1';
      for (let i = 0; i < MDE_QUOTAS.bulk.perMinute; i++)
        expect((await request(short, path, { token })).status).toBe(200);
      const throttled = await request(short, path, { token });
      expect(throttled.status).toBe(429);
      expect(Number(throttled.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(Number(throttled.headers['retry-after'])).toBeLessThanOrEqual(3);
    } finally {
      await short.close();
    }
  });

  test('startSimulator should refuse a quotaMinuteMs outside 1000..60000', async () => {
    await expect(startSimulator({ quotaMinuteMs: 500 })).rejects.toThrow(
      /quotaMinuteMs must be an integer 1000\.\.60000, got 500/,
    );
  });

  test('bulk export should allow 30 calls a minute and setQuotas(false) should lift every limit', async () => {
    const token = await getToken(sim, OTHER_TENANT);
    const path = '/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=1';
    const statuses: number[] = [];
    for (let i = 0; i < 31; i++) statuses.push((await request(sim, path, { token })).status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(30);
    expect(statuses[30]).toBe(429);
    sim.setQuotas(false);
    expect((await request(sim, path, { token })).status).toBe(200);
    sim.setQuotas(true);
    expect((await request(sim, path, { token })).status).toBe(429);
  });
});

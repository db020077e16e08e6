import https from 'node:https';
import { gunzipSync } from 'node:zlib';
import { startSimulator, type Simulator } from '@urs/simulator';
import { CLIENT_ID, getToken, request, SECRET, TENANT } from './helpers';

/** A GET whose body is kept as bytes (a gzipped answer is not text). */
function getBytes(
  sim: Simulator,
  path: string,
  headers: Record<string, string>,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${sim.baseUrl}${path}`, { headers, ca: sim.caPem, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

describe('front-end faults', () => {
  let sim: Simulator;
  let token: string;

  // A simulator of each test's own: its fault counts start at 0, whichever tests ran before.
  beforeEach(async () => {
    sim = await startSimulator({ quotas: false });
    sim.addTenant({
      azureTenantId: TENANT,
      apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
      fleet: { size: 30, seed: 5 },
    });
    token = await getToken(sim);
  }, 30_000);

  afterEach(() => sim.close());

  test('throttledCalls should answer that many calls 429 with Retry-After in seconds, then answer again', async () => {
    sim.setFaults(TENANT, { throttledCalls: 2, throttleRetryAfterSec: 7 });
    for (let i = 0; i < 2; i++) {
      const reply = await request(sim, '/api/machines?$top=1', { token });
      expect(reply.status).toBe(429);
      expect(reply.headers['retry-after']).toBe('7');
      expect(reply.json.error.code).toBe('TooManyRequests');
    }
    expect((await request(sim, '/api/machines?$top=1', { token })).status).toBe(200);
    expect(sim.stats().faultsByKind.throttled).toBe(2);
  });

  test('retryAfter httpDate should give the wait as an HTTP date no sooner than the wait', async () => {
    sim.setFaults(TENANT, { throttledCalls: 1, throttleRetryAfterSec: 30, retryAfter: 'httpDate' });
    const before = Date.now();
    const reply = await request(sim, '/api/machines?$top=1', { token });
    expect(reply.status).toBe(429);
    const header = reply.headers['retry-after'] as string;
    expect(header).toMatch(/^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
    expect(Date.parse(header)).toBeGreaterThanOrEqual(before + 30_000);
  });

  test('retryAfter none should answer the quota’s 429s without Retry-After', async () => {
    const quotas = await startSimulator({ quotas: true });
    try {
      quotas.addTenant({
        azureTenantId: TENANT,
        apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
        fleet: { size: 1 },
      });
      quotas.setFaults(TENANT, { retryAfter: 'none' });
      const own = await getToken(quotas);
      const replies = [];
      for (let i = 0; i < 31; i++)
        replies.push(await request(quotas, '/api/machines/SoftwareVulnerabilitiesByMachine', { token: own }));
      const throttled = replies.filter((r) => r.status === 429);
      expect(throttled).toHaveLength(1);
      expect(throttled[0]?.headers['retry-after']).toBeUndefined();
    } finally {
      await quotas.close();
    }
  }, 30_000);

  test.each([['empty'], ['html']] as const)(
    'status5xxBody %s should answer the listed 5xx statuses with that body',
    async (body) => {
      sim.setFaults(TENANT, { status5xxRate: 1, status5xxStatuses: [502], status5xxBody: body });
      const reply = await request(sim, '/api/machines?$top=1', { token });
      expect(reply.status).toBe(502);
      expect(reply.json).toBeUndefined();
      if (body === 'html') {
        expect(reply.headers['content-type']).toBe('text/html');
        expect(reply.text).toContain('<title>502 Bad Gateway</title>');
      } else expect(reply.text).toBe('');
    },
  );

  test.each([['empty'], ['html']] as const)(
    'gateway403 %s should answer every call 403 with that body, whatever the token’s roles',
    async (body) => {
      sim.setFaults(TENANT, { gateway403: body });
      const id = sim.machines(TENANT)[0]?.id as string;
      for (const path of ['/api/machines?$top=1', `/api/machines/${id}/vulnerabilities`]) {
        const reply = await request(sim, path, { token });
        expect(reply.status).toBe(403);
        expect(reply.json).toBeUndefined();
        if (body === 'html') {
          expect(reply.headers['content-type']).toBe('text/html');
          expect(reply.text).toContain('<title>403 Forbidden</title>');
        } else expect(reply.text).toBe('');
      }
      sim.setFaults(TENANT, {});
      expect((await request(sim, '/api/machines?$top=1', { token })).status).toBe(200);
    },
  );

  test.each([['empty'], ['html']] as const)(
    'gateway404 %s should answer every call 404 with that body, not MDE’s error JSON',
    async (body) => {
      sim.setFaults(TENANT, { gateway404: body });
      const id = sim.machines(TENANT)[0]?.id as string;
      for (const path of ['/api/machines?$top=1', `/api/machines/${id}/vulnerabilities`]) {
        const reply = await request(sim, path, { token });
        expect(reply.status).toBe(404);
        expect(reply.json).toBeUndefined();
        if (body === 'html') {
          expect(reply.headers['content-type']).toBe('text/html');
          expect(reply.text).toContain('<title>404 Not Found</title>');
        } else expect(reply.text).toBe('');
      }
      expect(sim.stats().faultsByKind.gateway404).toBe(2);
      sim.setFaults(TENANT, {});
      expect((await request(sim, '/api/machines?$top=1', { token })).status).toBe(200);
    },
  );

  test('setFaults should reject a gateway404 that is not empty or html', () => {
    expect(() => sim.setFaults(TENANT, { gateway404: 'mde' as never })).toThrow(
      'faults.gateway404 must be one of empty, html',
    );
  });

  test('setFaults should reject a gateway403 that is not empty or html', () => {
    expect(() => sim.setFaults(TENANT, { gateway403: 'mde' as never })).toThrow(
      'faults.gateway403 must be one of empty, html',
    );
  });

  test('nextLinkOrigin should name that origin in the paged answers’ links, which still lead here by path', async () => {
    sim.setFaults(TENANT, { nextLinkOrigin: 'https://api.securitycenter.microsoft.com/' });
    const page = await request(sim, '/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=5', { token });
    expect(page.status).toBe(200);
    const next = new URL(page.json['@odata.nextLink'] as string);
    expect(next.origin).toBe('https://api.securitycenter.microsoft.com');
    expect(page.json['@odata.context']).toMatch(/^https:\/\/api\.securitycenter\.microsoft\.com\/api\//);
    const following = await request(sim, `${next.pathname}${next.search}`, { token });
    expect(following.status).toBe(200);
    expect(following.json.value).toHaveLength(5);
  });

  test('setFaults should reject a nextLinkOrigin that is not an http(s) URL', () => {
    expect(() => sim.setFaults(TENANT, { nextLinkOrigin: 'api.example' })).toThrow(
      'faults.nextLinkOrigin must be an http(s) URL',
    );
  });

  test.each([
    ['a listing page', '/api/machines'],
    ['a device', '/api/machines/{id}'],
    ['a device’s vulnerabilities', '/api/machines/{id}/vulnerabilities'],
    ['a bulk export page', '/api/machines/SoftwareVulnerabilitiesByMachine'],
  ])('gzip should gzip %s when the request accepts gzip, and only then', async (_what, template) => {
    sim.setFaults(TENANT, { gzip: true });
    const id = sim.machines(TENANT)[0]?.id as string;
    const path = template.replace('{id}', id);
    const auth = { authorization: `Bearer ${token}` };
    const zipped = await getBytes(sim, path, { ...auth, 'accept-encoding': 'gzip, deflate, br' });
    expect(zipped.status).toBe(200);
    expect(zipped.headers['content-encoding']).toBe('gzip');
    const body = JSON.parse(gunzipSync(zipped.body).toString('utf8')) as Record<string, unknown>;
    const plain = await getBytes(sim, path, auth);
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(body).toEqual(JSON.parse(plain.body.toString('utf8')));
    const refused = await getBytes(sim, path, { ...auth, 'accept-encoding': 'gzip;q=0, identity' });
    expect(refused.headers['content-encoding']).toBeUndefined();
    expect(sim.stats().faultsByKind.gzip).toBe(1);
  });
});

import type { ScoredDevice, TenantRecord } from '@urs/contracts';
import type { StoredScore, TenantStatus } from '@urs/store';
import { scoredDevice } from '@urs/testkit';
import { deviceRoutes } from '../../src/http/devices';
import type { ApiResponse } from '../../src/http/router';
import { routeCaller } from './call';

function stored(
  deviceId: string,
  score: number,
  band: ScoredDevice['band'],
  cycleId = 'c2',
  overrides: Partial<ScoredDevice> = {},
): StoredScore {
  const device = scoredDevice(deviceId, score, band, {
    computerDnsName: `${deviceId}.contoso.com`,
    criticalScore: 1,
    contributions: [{ group: 'critical', signal: 'riskScore', value: 'High', points: 100, assumed: false }],
    missing: ['criticalCves'],
    signals: { riskScore: { value: 'High', at: null } },
    missingReasons: { criticalCves: 'FETCH_FAILED' },
    ...overrides,
  });
  // `missingReasons: undefined` in overrides: a record without the field (missing nothing, or an older scorer's).
  if (!device.missingReasons) delete device.missingReasons;
  return {
    tenantId: 't1',
    cycleId,
    cycleStartedAt: '2026-01-01T10:00:00.000Z',
    collectedAt: '2026-01-01T10:00:05.000Z',
    scoredAt: '2026-01-01T10:00:06.000Z',
    device,
  };
}

const scores = [
  stored('a', 85, 'High Risk'),
  stored('b', 10, 'Trustworthy', 'c2', { missing: [], missingReasons: undefined }),
  // Stored by an older scorer: its signal is missing, with no reason.
  stored('c', 30, 'Low Risk', 'c1', { missingReasons: undefined }),
];
const refusedStatus: TenantStatus = {
  state: 'registration-rejected',
  registrationError: {
    code: 'REGISTRATION_INVALID',
    message: 'registration refused: defender.clientId must be a GUID',
    violations: [{ field: 'defender.clientId', rule: 'must be a GUID' }],
    at: '2026-01-01T10:00:00.000Z',
    source: 'director',
    generation: 3,
  },
};
const routes = deviceRoutes({
  ensureRebuilt: async () => undefined,
  tenants: {
    get: async (tenantId) => (tenantId === 't1' ? ({ tenantId } as TenantRecord) : null),
    // t2 has no record: its only registration was refused.
    getStatus: async (tenantId) => (tenantId === 't2' ? refusedStatus : {}),
  },
  scores: {
    getDeviceScore: async (_tenantId, deviceId) => scores.find((s) => s.device.deviceId === deviceId) ?? null,
    listDeviceScores: async (_tenantId, options = {}) => {
      const items = scores.filter((s) => options.band === undefined || s.device.band === options.band);
      return {
        total: items.length,
        items: items.slice(options.offset ?? 0, (options.offset ?? 0) + (options.limit ?? 1000)),
      };
    },
    history: async () => [
      {
        cycleId: 'c2',
        cycleStartedAt: 't2',
        scoredAt: 't2',
        score: 85,
        band: 'High Risk',
        criticalScore: 1,
        operationalScore: 0,
        missing: [],
      },
      {
        cycleId: 'c1',
        cycleStartedAt: 't1',
        scoredAt: 't1',
        score: 40,
        band: 'Low Risk',
        criticalScore: 0.4,
        operationalScore: 0.2,
        missing: [],
      },
    ],
  },
});
const callRoute = routeCaller(routes);
const call = (path: string): Promise<ApiResponse> => callRoute('GET', path);

describe('deviceRoutes', () => {
  it('GET devices should list the latest scores, filtered by band in any spelling', async () => {
    const all = await call('/v1/tenants/t1/devices');
    expect(all.status).toBe(200);
    expect(all.body).toMatchObject({
      tenantId: 't1',
      total: 3,
      devices: [{ deviceId: 'a', score: 85, band: 'High Risk' }, { deviceId: 'b' }, { deviceId: 'c' }],
    });
    const high = await call('/v1/tenants/t1/devices?band=high-risk');
    expect(high.body).toMatchObject({ band: 'High Risk', total: 1, devices: [{ deviceId: 'a' }] });
  });

  it('GET devices should say why each missing signal is missing, and nothing of reasons where none is missing or none was stored', async () => {
    const answer = await call('/v1/tenants/t1/devices');
    const [a, b, c] = (answer.body as { devices: Record<string, unknown>[] }).devices;
    expect(a).toMatchObject({
      deviceId: 'a',
      missing: ['criticalCves'],
      missingReasons: { criticalCves: 'FETCH_FAILED' },
    });
    expect(b).toMatchObject({ deviceId: 'b', missing: [] });
    expect(b).not.toHaveProperty('missingReasons');
    expect(c).toMatchObject({ deviceId: 'c', missing: ['criticalCves'] });
    expect(c).not.toHaveProperty('missingReasons');
  });

  it('GET devices should refuse an unknown band or limit naming the field and the rule', async () => {
    const answer = await call('/v1/tenants/t1/devices?band=Dangerous');
    expect(answer.status).toBe(400);
    expect(answer.body).toMatchObject({
      error: { code: 'VALIDATION_FAILED', violations: [{ field: 'band' }] },
    });
    expect((await call('/v1/tenants/t1/devices?limit=-1')).status).toBe(400);
  });

  it.each([
    [
      'a misspelt band',
      '?Band=High%20Risk',
      ['Band'],
      'unknown query parameter Band (accepted: band, limit, offset)',
    ],
    [
      'a plural',
      '?bands=high-risk&limit=10',
      ['bands'],
      'unknown query parameter bands (accepted: band, limit, offset)',
    ],
    [
      'two unknown ones',
      '?page=2&size=10',
      ['page', 'size'],
      'unknown query parameters page, size (accepted: band, limit, offset)',
    ],
  ])(
    'GET devices should refuse %s naming the parameter and the accepted ones',
    async (_case, query, fields, message) => {
      const answer = await call(`/v1/tenants/t1/devices${query}`);
      expect(answer.status).toBe(400);
      expect(answer.body).toEqual({
        error: {
          code: 'VALIDATION_FAILED',
          message,
          violations: fields.map((field) => ({
            field,
            rule: 'is not a query parameter of this route (accepted: band, limit, offset)',
          })),
        },
      });
    },
  );

  it('GET devices should refuse a query parameter given twice rather than take one of them', async () => {
    const answer = await call('/v1/tenants/t1/devices?band=high-risk&band=trustworthy');
    expect(answer.status).toBe(400);
    expect(answer.body).toEqual({
      error: {
        code: 'VALIDATION_FAILED',
        message: 'query parameter band given more than once',
        violations: [{ field: 'band', rule: 'must be given at most once' }],
      },
    });
  });

  it('GET one device should answer its score with the explanation and history', async () => {
    const answer = await call('/v1/tenants/t1/devices/a');
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({
      tenantId: 't1',
      deviceId: 'a',
      score: 85,
      band: 'High Risk',
      cycleId: 'c2',
      contributions: [{ signal: 'riskScore', points: 100 }],
      missing: ['criticalCves'],
      history: [
        { cycleId: 'c2', score: 85 },
        { cycleId: 'c1', score: 40, band: 'Low Risk' },
      ],
    });
  });

  it('GET should answer 404 for an unknown tenant or device', async () => {
    expect((await call('/v1/tenants/nobody/devices')).body).toMatchObject({
      error: { code: 'TENANT_NOT_FOUND' },
    });
    expect((await call('/v1/tenants/t1/devices/zzz')).status).toBe(404);
  });

  it('GET should answer a tenant whose every registration was refused 404 TENANT_NOT_REGISTERED with the refusal, as GET defender does', async () => {
    for (const path of ['/v1/tenants/t2/devices', '/v1/tenants/t2/devices/a']) {
      expect(await call(path)).toMatchObject({
        status: 404,
        body: {
          error: {
            code: 'TENANT_NOT_REGISTERED',
            message:
              'tenant t2 has no accepted registration; the last one was refused: registration refused: clientId must be a GUID',
            violations: [{ field: 'clientId', rule: 'must be a GUID' }],
          },
        },
      });
    }
  });
});

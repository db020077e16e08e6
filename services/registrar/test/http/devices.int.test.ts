import type { TenantRecord } from '@urs/contracts';
import { createScoreStore } from '@urs/store';
import { scoredDevice, storeHistoryWithoutReasons, testRedisPerTest } from '@urs/testkit';
import { deviceRoutes } from '../../src/http/devices';
import { routeCaller } from './call';

const cycle = (cycleId: string, startedAt: string) => ({
  cycleId,
  cycleStartedAt: startedAt,
  collectedAt: startedAt,
  scoredAt: startedAt,
});

// The device routes over the score store in Redis: what the scorer stored is what the answers say.
describe('deviceRoutes over the score store', () => {
  const redis = testRedisPerTest();

  it('GET one device should say why each missing signal is missing in its history, as in its score, and read an older entry without reasons', async () => {
    const scores = createScoreStore(redis.client, redis.prefix);
    const call = routeCaller(
      deviceRoutes({
        ensureRebuilt: async () => undefined,
        tenants: {
          get: async (tenantId) => ({ tenantId }) as TenantRecord,
          getStatus: async () => ({}),
        },
        scores,
      }),
    );
    // An entry stored before entries kept reasons.
    await storeHistoryWithoutReasons(redis, 't1', 'd1');
    await scores.saveScores('t1', cycle('c1', '2026-01-01T10:00:00.000Z'), [
      scoredDevice('d1', 60, 'Moderate Risk', {
        missing: ['criticalCves'],
        missingReasons: { criticalCves: 'NOT_IN_EXPORT_SNAPSHOT' },
      }),
    ]);
    await scores.saveScores('t1', cycle('c2', '2026-01-01T10:10:00.000Z'), [
      scoredDevice('d1', 70, 'Suspicious', {
        missing: ['criticalCves', 'inactivity'],
        missingReasons: { criticalCves: 'EXCLUDED', inactivity: 'NOT_REPORTED' },
      }),
    ]);
    await scores.saveScores('t1', cycle('c3', '2026-01-01T10:20:00.000Z'), [
      scoredDevice('d1', 20, 'Low Risk'),
    ]);

    const answer = await call('GET', '/v1/tenants/t1/devices/d1');
    expect(answer.status).toBe(200);
    const body = answer.body as { missing: string[]; history: Record<string, unknown>[] };
    expect(body.missing).toEqual([]);
    expect(body).not.toHaveProperty('missingReasons');
    expect(body.history.map((entry) => [entry.cycleId, entry.missing, entry.missingReasons])).toEqual([
      ['c3', [], undefined],
      ['c2', ['criticalCves', 'inactivity'], { criticalCves: 'EXCLUDED', inactivity: 'NOT_REPORTED' }],
      ['c1', ['criticalCves'], { criticalCves: 'NOT_IN_EXPORT_SNAPSHOT' }],
      ['c0', ['criticalCves'], undefined],
    ]);
    expect(body.history[0]).not.toHaveProperty('missingReasons');
    expect(body.history[3]).not.toHaveProperty('missingReasons');
  });
});

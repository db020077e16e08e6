import { silentLogger } from '@urs/logging';
import { createTenantStore } from '@urs/store';
import { tenantRecord, testRedisPerTest } from '@urs/testkit';
import { createTenantState } from '../src/tenant';
import { batch } from './handler-support';

// A tenant's failure a batch meets is written to its status only while its record is enabled: a batch still
// in flight for a tenant just disabled or deleted leaves the status the registrar wrote.
describe('createTenantState failed', () => {
  const redis = testRedisPerTest();
  const failure = { code: 'DEFENDER_CONSENT_MISSING', message: 'no consent' };

  it('should write the failure to an enabled tenant’s status', async () => {
    const tenants = createTenantStore(redis.client, redis.prefix);
    await tenants.put(tenantRecord('t1'));
    const state = createTenantState({ tenants, now: () => new Date('2026-01-01T00:00:00Z') });
    await state.failed(batch({ tenantId: 't1', cycleId: 'c1' }), 't1/c1', 1, failure, silentLogger);
    expect(await tenants.getStatus('t1')).toMatchObject({
      state: 'error',
      lastErrorCode: 'DEFENDER_CONSENT_MISSING',
      lastErrorCycleId: 'c1',
    });
  });

  it('should leave the status of a tenant disabled meanwhile as the registrar wrote it', async () => {
    const tenants = createTenantStore(redis.client, redis.prefix);
    await tenants.put({ ...tenantRecord('t2', { revision: 2 }), enabled: false });
    await tenants.updateStatus('t2', { state: 'disabled', nextPollAt: null });
    const state = createTenantState({ tenants, now: () => new Date() });
    await state.failed(batch({ tenantId: 't2', cycleId: 'c1' }), 't2/c1', 2, failure, silentLogger);
    expect(await tenants.getStatus('t2')).toEqual({ state: 'disabled', updatedAt: expect.any(String) });
  });
});

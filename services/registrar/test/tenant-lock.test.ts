import { isInfrastructureFault } from '@urs/resilience';
import { createTenantLock } from '../src/tenant-lock';
import { memoryStateStore } from './fakes';

describe('createTenantLock', () => {
  afterEach(() => jest.useRealTimers());

  it('locked should run the works of one tenant one after the other, of two tenants side by side', async () => {
    const locked = createTenantLock(memoryStateStore());
    const events: string[] = [];
    const work = (name: string) => async () => {
      events.push(`${name} in`);
      await new Promise((resolve) => setTimeout(resolve, 20));
      events.push(`${name} out`);
      return name;
    };
    const results = await Promise.all([
      locked('acme', undefined, work('a1')),
      locked('acme', undefined, work('a2')),
      locked('other', undefined, work('o')),
    ]);
    expect(results).toEqual(['a1', 'a2', 'o']);
    expect(events.indexOf('a2 in')).toBeGreaterThan(events.indexOf('a1 out'));
    expect(events.indexOf('o in')).toBeLessThan(events.indexOf('a1 out'));
  });

  it('locked should give the lock back when its work fails', async () => {
    const locked = createTenantLock(memoryStateStore());
    await expect(
      locked('acme', undefined, () => Promise.reject(new Error('produce failed'))),
    ).rejects.toThrow('produce failed');
    await expect(locked('acme', undefined, async () => 'next')).resolves.toBe('next');
  });

  it('locked should not start the work of a cut request, before or while it waits', async () => {
    const state = memoryStateStore();
    const locked = createTenantLock(state);
    const cut = new AbortController();
    cut.abort(new Error('stopping'));
    const work = jest.fn(async () => 'written');
    await expect(locked('acme', cut.signal, work)).rejects.toMatchObject({ code: 'REQUEST_CUT' });
    const held = await state.lockTenant('acme', 15_000);
    const waiting = new AbortController();
    const waited = locked('acme', waiting.signal, work);
    setTimeout(() => waiting.abort(new Error('stopping')), 30);
    await expect(waited).rejects.toMatchObject({ code: 'REQUEST_CUT', canRetry: true });
    expect(work).not.toHaveBeenCalled();
    await state.unlockTenant('acme', held as string);
  });

  it('locked should fail retryably with TENANT_BUSY after waiting 20 s for another writer', async () => {
    jest.useFakeTimers();
    const state = memoryStateStore();
    const locked = createTenantLock(state);
    await state.lockTenant('acme', 15_000);
    const work = jest.fn(async () => 'written');
    const waited = locked('acme', undefined, work);
    let settled = false;
    waited.catch(() => undefined).finally(() => (settled = true));
    const outcome = expect(waited).rejects.toMatchObject({ code: 'TENANT_BUSY', canRetry: true });
    await jest.advanceTimersByTimeAsync(19_000);
    expect(settled).toBe(false);
    await jest.advanceTimersByTimeAsync(2_000);
    await outcome;
    expect(work).not.toHaveBeenCalled();
  });
  it("locked should take the lock as lost once Redis answers none of its renewals for the lock's length, as a fault of Redis", async () => {
    jest.useFakeTimers();
    const state = memoryStateStore();
    // Redis away: the client queues the renewals, which neither hold nor fail.
    state.renewTenantLock = () => new Promise<boolean>(() => undefined);
    const locked = createTenantLock(state, { lockMs: 15_000 });
    const written: string[] = [];
    const waited = locked('acme', undefined, async (held) => {
      await new Promise<void>((resolve) => held.addEventListener('abort', () => resolve(), { once: true }));
      if (held.aborted) throw held.reason;
      written.push('redis');
    });
    const outcome = expect(waited).rejects.toMatchObject({ code: 'TENANT_LOCK_LOST', canRetry: true });
    await jest.advanceTimersByTimeAsync(16_000);
    await outcome;
    expect(written).toEqual([]);
    // A push meeting it is held, not dead-lettered: Redis, not the tenant, is at fault.
    expect(isInfrastructureFault(await waited.catch((error: unknown) => error))).toBe(true);
  });

  it('locked should not take its lock for lapsed when the wall clock steps forward by more than its length', async () => {
    // Redis answers each renewal after a moment, well within the lock's length.
    const state = memoryStateStore();
    const renew = state.renewTenantLock.bind(state);
    state.renewTenantLock = async (...args) => {
      await new Promise((resolve) => setTimeout(resolve, 60));
      return renew(...args);
    };
    const locked = createTenantLock(state, { lockMs: 300 });
    const wall = Date.now();
    const aborted = await locked('acme', undefined, async (held) => {
      // NTP steps the clock an hour forward; the lock's renewals and its lapse check run meanwhile.
      const stepped = jest.spyOn(Date, 'now').mockReturnValue(wall + 3_600_000);
      try {
        await new Promise((resolve) => setTimeout(resolve, 450));
        return held.aborted;
      } finally {
        stepped.mockRestore();
      }
    });
    expect(aborted).toBe(false);
  });
});

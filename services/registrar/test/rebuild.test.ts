import { silentLogger } from '@urs/logging';
import { createTenantRebuilder, type TenantLogEntry } from '../src/rebuild';
import { memoryStateStore, memoryTenantStore, tenantRecord as record } from './fakes';

function setup(entries: TenantLogEntry[]) {
  const tenants = memoryTenantStore();
  const state = memoryStateStore();
  let rebuilt = false;
  let reads = 0;
  const rebuilder = createTenantRebuilder({
    readLog: async () => {
      reads++;
      return entries;
    },
    tenants,
    state: { ...state, isRebuilt: async () => rebuilt, markRebuilt: async () => void (rebuilt = true) },
    logger: silentLogger,
  });
  return { tenants, state, rebuilder, reads: () => reads, wipe: () => (rebuilt = false) };
}

describe('createTenantRebuilder', () => {
  it('ensure should restore records, statuses and the last generation from the log, once', async () => {
    const { tenants, state, rebuilder, reads } = setup([
      { tenantId: 'a', record: record('a', 7) },
      {
        tenantId: 'b',
        record: record('b', 9, { enabled: false, disabledReason: 'missing from Director full push 9' }),
      },
      { tenantId: 'gone', record: null, revision: 12 },
    ]);
    await Promise.all([rebuilder.ensure(), rebuilder.ensure()]);
    await rebuilder.ensure();
    expect(reads()).toBe(1);
    expect(await tenants.ids()).toEqual(['a', 'b']);
    expect((await tenants.getStatus('b')).state).toBe('disabled');
    expect(state.generation).toBe(9);
    expect(await state.nextRevision('gone')).toBeGreaterThan(12);
  });

  it('ensure should keep a newer record written while Redis was empty', async () => {
    const { tenants, rebuilder, wipe } = setup([{ tenantId: 'a', record: record('a', 7) }]);
    await rebuilder.ensure();
    wipe();
    await tenants.put(record('a', 20, { enabled: false }));
    await rebuilder.ensure();
    expect((await tenants.get('a'))?.revision).toBe(20);
  });
});

import { BusError } from '@urs/bus';
import { silentLogger } from '@urs/logging';
import { createTenantRebuilder, type TenantLogEntry } from '../src/rebuild';
import { memoryStateStore, memoryTenantStore, tenantRecord as record } from './fakes';

/** What readTenantLog throws when Kafka stopped its consumer for good. */
const consumerStopped = (): BusError =>
  new BusError(
    'CONSUMER_STOPPED',
    'reading urs.tenants: Kafka stopped its consumer: Not authorized to access group',
  );

/** A rebuilder whose Redis is always empty and whose every read of the log fails with the next of `failures`. */
function failing(failures: Error[]) {
  let reads = 0;
  const rebuilder = createTenantRebuilder({
    readLog: async () => {
      throw failures[Math.min(reads++, failures.length - 1)] as Error;
    },
    readGeneration: async () => -1,
    tenants: memoryTenantStore(),
    state: { ...memoryStateStore(), isRebuilt: async () => false },
    logger: silentLogger,
  });
  return { rebuilder, reads: () => reads };
}

function setup(entries: TenantLogEntry[], generation = -1) {
  const tenants = memoryTenantStore();
  const state = memoryStateStore();
  let rebuilt = false;
  let reads = 0;
  const rebuilder = createTenantRebuilder({
    readLog: async () => {
      reads++;
      return entries;
    },
    readGeneration: async () => generation,
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

  it('ensure should restore the generation in force at each deletion', async () => {
    const { state, rebuilder } = setup([
      { tenantId: 'a', record: record('a', 7) },
      { tenantId: 'gone', record: null, revision: 12, generation: 5 },
    ]);
    await rebuilder.ensure();
    expect(await state.deletionGeneration('gone')).toBe(5);
    expect(await state.deletionGeneration('a')).toBe(-1);
  });

  it('ensure should restore the last generation applied from the registration topic when no record carries it', async () => {
    // Generation 8 changed no tenant: only the pushes on urs.registration say it was applied.
    const { state, rebuilder } = setup([{ tenantId: 'a', record: record('a', 7) }], 8);
    await rebuilder.ensure();
    expect(state.generation).toBe(8);
  });

  it('ensure should keep a newer record written while Redis was empty', async () => {
    const { tenants, rebuilder, wipe } = setup([{ tenantId: 'a', record: record('a', 7) }]);
    await rebuilder.ensure();
    wipe();
    await tenants.put(record('a', 20, { enabled: false }));
    await rebuilder.ensure();
    expect((await tenants.get('a'))?.revision).toBe(20);
  });

  it('ensure should report a rebuild that failed for good through failed, and reject its callers retryably', async () => {
    const stopped = consumerStopped();
    const { rebuilder } = failing([stopped]);
    // A Director push waiting on it is retried (not dead-lettered) until the registrar is started again.
    await expect(rebuilder.ensure()).rejects.toMatchObject({
      code: 'REBUILD_FAILED',
      canRetry: true,
      message: expect.stringContaining('Not authorized to access group'),
    });
    await expect(rebuilder.failed()).resolves.toBe(stopped);
  });

  it('watch should retry a rebuild that may succeed again, and stop once one failed for good', async () => {
    const stopped = consumerStopped();
    const { rebuilder, reads } = failing([
      new Error('Connection timeout'),
      new Error('Connection timeout'),
      stopped,
    ]);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 1_000);
    await rebuilder.watch(1, abort.signal);
    clearTimeout(timer);
    expect(abort.signal.aborted).toBe(false);
    expect(reads()).toBe(3);
    await expect(rebuilder.failed()).resolves.toBe(stopped);
  });
});

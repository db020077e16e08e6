import {
  KafkaJSGroupCoordinatorNotFound,
  KafkaJSProtocolError,
  type ConsumerRunConfig,
  type EachBatchPayload,
  type Kafka,
} from 'kafkajs';
import { BusError } from '@urs/bus';
import { silentLogger } from '@urs/logging';
import { createTenantRebuilder, readTenantLog, type TenantLogEntry } from '../src/rebuild';
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

  it('catchUp should hand the log to catchUp once per process, and not after a rebuild of the process', async () => {
    const entries: TenantLogEntry[] = [{ tenantId: 'a', record: record('a', 7) }];
    const caughtUp: TenantLogEntry[][] = [];
    const rebuilder = (rebuilt: boolean) =>
      createTenantRebuilder({
        readLog: async () => entries,
        readGeneration: async () => -1,
        tenants: memoryTenantStore(),
        state: { ...memoryStateStore(), isRebuilt: async () => rebuilt, markRebuilt: async () => undefined },
        logger: silentLogger,
        catchUp: async (read) => void caughtUp.push(read),
      });
    const restarted = rebuilder(true);
    await restarted.ensure();
    await Promise.all([restarted.catchUp(), restarted.catchUp()]);
    await restarted.catchUp();
    expect(caughtUp).toEqual([entries]);
    // A rebuild wrote back every record newer than Redis's: nothing to catch up after it.
    const wiped = rebuilder(false);
    await wiped.ensure();
    await wiped.catchUp();
    expect(caughtUp).toHaveLength(1);
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

  it('ensure should fail retryably, not for good, when Kafka stops its consumer during an outage', async () => {
    // KafkaJS stops a consumer that finds no group coordinator (its broker away or restarting) with
    // restart false; the rebuild is tried again, and succeeds once the broker is back.
    const kafka = fakeKafka([{ key: 'a', value: JSON.stringify(record('a', 3)) }]);
    const tenants = memoryTenantStore();
    let rebuilt = false;
    const rebuilder = createTenantRebuilder({
      readLog: () => readTenantLog(kafka.client, 'urs.tenants', 'registrar', silentLogger, 5_000),
      readGeneration: async () => -1,
      tenants,
      state: {
        ...memoryStateStore(),
        isRebuilt: async () => rebuilt,
        markRebuilt: async () => void (rebuilt = true),
      },
      logger: silentLogger,
    });
    let failed: Error | undefined;
    void rebuilder.failed().then((error) => (failed = error));
    kafka.crashWith(
      new (KafkaJSGroupCoordinatorNotFound as unknown as new (message: string) => Error)(
        'Failed to find group coordinator',
      ),
    );
    await expect(rebuilder.ensure()).rejects.toMatchObject({
      code: 'CONSUMER_STOPPED',
      canRetry: true,
      message: expect.stringContaining('Failed to find group coordinator'),
    });
    kafka.crashWith(undefined);
    await rebuilder.ensure();
    expect(await tenants.ids()).toEqual(['a']);
    await new Promise((resolve) => setImmediate(resolve));
    expect(failed).toBeUndefined();
  });

  it('ensure should fail for good when Kafka stops its consumer with an error waiting does not mend', async () => {
    const kafka = fakeKafka([{ key: 'a', value: JSON.stringify(record('a', 3)) }]);
    const rebuilder = createTenantRebuilder({
      readLog: () => readTenantLog(kafka.client, 'urs.tenants', 'registrar', silentLogger, 5_000),
      readGeneration: async () => -1,
      tenants: memoryTenantStore(),
      state: { ...memoryStateStore(), isRebuilt: async () => false },
      logger: silentLogger,
    });
    kafka.crashWith(
      new KafkaJSProtocolError(
        Object.assign(new Error('Not authorized to access group'), {
          type: 'GROUP_AUTHORIZATION_FAILED',
          code: 30,
        }),
      ),
    );
    await expect(rebuilder.ensure()).rejects.toMatchObject({ code: 'REBUILD_FAILED', canRetry: true });
    await expect(rebuilder.failed()).resolves.toMatchObject({ code: 'CONSUMER_STOPPED', canRetry: false });
  });
});

/**
 * Enough of KafkaJS for readTenantLog over one partition holding `messages`: a consumer either reads them in
 * one batch or, while `crashWith` was given an error, is stopped by KafkaJS with it (restart false) once run.
 */
function fakeKafka(messages: { key: string; value: string }[]) {
  let crash: Error | undefined;
  const admin = () => ({
    connect: async () => undefined,
    disconnect: async () => undefined,
    deleteGroups: async () => [],
    fetchTopicOffsets: async () => [
      { partition: 0, offset: String(messages.length), high: String(messages.length), low: '0' },
    ],
  });
  const consumer = () => {
    const listeners = new Map<string, (event: unknown) => void>();
    return {
      events: { CRASH: 'consumer.crash' },
      on: (name: string, listener: (event: unknown) => void) => listeners.set(name, listener),
      connect: async () => undefined,
      subscribe: async () => undefined,
      disconnect: async () => undefined,
      run: async (config: ConsumerRunConfig) => {
        const error = crash;
        setImmediate(() => {
          if (error) {
            listeners.get('consumer.crash')?.({ payload: { error, groupId: 'g', restart: false } });
            return;
          }
          const batch = {
            partition: 0,
            messages: messages.map((message, offset) => ({
              key: Buffer.from(message.key),
              value: Buffer.from(message.value),
              offset: String(offset),
              headers: {},
            })),
            lastOffset: () => String(messages.length - 1),
          };
          void config.eachBatch?.({ batch } as unknown as EachBatchPayload);
        });
      },
    };
  };
  return {
    client: { admin, consumer } as unknown as Kafka,
    crashWith: (error: Error | undefined) => (crash = error),
  };
}

import type { RegistrationPush } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createRegistrarStateStore, createTenantStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { createTestRedis, inboundMessage, type TestRedis } from '@urs/testkit';
import { createRegistrationHandler } from '../src/director';
import { memoryPublisher, registrationBody, testRegistry, testSealer } from './fakes';

const HOUR_MS = 60 * 60 * 1000;

const item = (tenantId: string, overrides: Record<string, unknown> = {}) => ({
  tenantId,
  defender: registrationBody(overrides),
});

/** The machine's own time: `performance` is left real while `Date` is faked. */
const realNow = (): number => performance.timeOrigin + performance.now();

/** Redis's clock, in milliseconds: the one the records' `updatedAt` and the push-start marker are read from. */
async function redisMs(redis: TestRedis): Promise<number> {
  const [seconds, microseconds] = await redis.client.time();
  return Number(seconds) * 1000 + Math.floor(Number(microseconds) / 1000);
}

/**
 * Resolves once Redis's clock has left the millisecond it reads now. A REST write and a push that begins in the
 * same millisecond are one instant to the rule, which keeps the administrator's write (`restRecordKept`): a push
 * meant to begin after a write waits for this.
 */
async function nextRedisMillisecond(redis: TestRedis): Promise<void> {
  const now = await redisMs(redis);
  while ((await redisMs(redis)) === now);
}

// Two registrar replicas over one real Redis, whose machines' clocks disagree: each step runs with the
// process's `Date` set to the clock of the replica taking it. Whether a push handled again keeps an
// administrator's REST write must follow the order the writes were made in, not the replicas' clocks.
describe('a Director push handled again over registrar replicas with skewed clocks', () => {
  let redis: TestRedis;

  beforeEach(() => {
    redis = createTestRedis();
    // Only `Date`: timers, ticks and `performance` stay real, for the Redis client and the tenant locks.
    jest.useFakeTimers({
      doNotFake: [
        'hrtime',
        'nextTick',
        'performance',
        'queueMicrotask',
        'requestAnimationFrame',
        'cancelAnimationFrame',
        'requestIdleCallback',
        'cancelIdleCallback',
        'setImmediate',
        'clearImmediate',
        'setInterval',
        'clearInterval',
        'setTimeout',
        'clearTimeout',
      ],
    });
  });

  afterEach(async () => {
    jest.useRealTimers();
    await redis.close();
  });

  /** One registrar: its registry (REST's and the pushes') and its Director handler, on the shared Redis. */
  function replica(clockOffsetMs: number) {
    const tenants = createTenantStore(redis.client, redis.prefix);
    const state = createRegistrarStateStore(redis.client, redis.prefix);
    const publisher = memoryPublisher();
    const registry = testRegistry({ tenants, state, publisher, sealer: testSealer() });
    const director = createRegistrationHandler({
      registry,
      tenants,
      state,
      publisher,
      dlqTopic: 'urs.dlq',
      ensureRebuilt: async () => undefined,
      logger: silentLogger,
      metrics: new Registry(),
    });
    /** Runs `step` with this replica's clock. */
    const onItsClock = async <T>(step: () => Promise<T>): Promise<T> => {
      jest.setSystemTime(realNow() + clockOffsetMs);
      return step();
    };
    let offset = 0;
    return {
      tenants,
      push: (generation: number, mode: 'full' | 'delta', items: unknown[]) =>
        onItsClock(() =>
          director.handle(
            inboundMessage<RegistrationPush>(
              { schemaVersion: 1, generation, mode, tenants: items },
              { topic: 'urs.registration', offset: String(offset++), timestamp: realNow() },
            ),
          ),
        ),
      /** An administrator's PUT of the tenant, over REST. */
      put: (tenantId: string, overrides: Record<string, unknown>) =>
        onItsClock(() =>
          registry.register({ tenantId, defender: registrationBody(overrides) as never }, { source: 'rest' }),
        ),
    };
  }

  it('should keep a REST write made after the push began on a replica whose clock is behind the one that began it', async () => {
    const ahead = replica(HOUR_MS);
    const right = replica(0);
    await right.push(1, 'delta', [item('t'), item('b')]);
    // The push of generation 2 is first handled by the replica an hour ahead. It finds t unchanged: t's record
    // keeps generation 1, so only the time the push began tells a later REST write of t from an earlier one.
    const second = [item('t'), item('b', { pollIntervalMinutes: 30 })];
    await ahead.push(2, 'delta', second);
    expect(await right.tenants.get('t')).toMatchObject({ source: 'director', generation: 1 });
    // Then an administrator edits t over REST, on the replica whose clock is right.
    await right.put('t', { pollIntervalMinutes: 120 });
    // Generation 2 delivered again (its registrar stopped before committing it): the edit came after it began.
    await right.push(2, 'delta', second);
    expect(await right.tenants.get('t')).toMatchObject({
      source: 'rest',
      generation: 1,
      defender: { pollIntervalMinutes: 120 },
    });
  });

  it('should write over a REST write made before the push began on a replica whose clock is ahead of the one that began it', async () => {
    const behind = replica(-HOUR_MS);
    const right = replica(0);
    await right.push(1, 'delta', [item('t'), item('left-out')]);
    // An administrator edits both over REST, on the replica whose clock is right...
    await right.put('t', { pollIntervalMinutes: 120 });
    await right.put('left-out', { pollIntervalMinutes: 120 });
    await nextRedisMillisecond(redis);
    // ...and then the push of generation 2 is first handled by the replica an hour behind: it writes t over, and
    // disables the Director tenant it leaves out, as it would any REST edit made before it.
    await behind.push(2, 'full', [item('t', { pollIntervalMinutes: 30 })]);
    expect(await right.tenants.get('t')).toMatchObject({
      source: 'director',
      generation: 2,
      defender: { pollIntervalMinutes: 30 },
    });
    expect(await right.tenants.get('left-out')).toMatchObject({
      enabled: false,
      disabledReason: 'missing from Director full push 2',
    });
  });
});

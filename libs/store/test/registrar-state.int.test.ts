import { setTimeout as sleep } from 'node:timers/promises';
import { createRegistrarStateStore } from '@urs/store';
import { testRedisPerTest } from '@urs/testkit';
import { ISO_TIME_LUA } from '../src/registrar-state';

describe('createRegistrarStateStore', () => {
  const redis = testRedisPerTest();

  it('nextRevision should hand out distinct increasing revisions to concurrent callers', async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    const revisions = await Promise.all(Array.from({ length: 50 }, () => store.nextRevision('acme')));
    expect(new Set(revisions).size).toBe(50);
    const next = await store.nextRevision('acme');
    expect(next).toBeGreaterThan(Math.max(...revisions));
    expect(Number.isSafeInteger(next)).toBe(true);
  });

  it('lockTenant should admit one writer of a tenant at a time, until it unlocks or the lock lapses', async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    const token = await store.lockTenant('acme', 10_000);
    expect(token).not.toBeNull();
    expect(await store.lockTenant('acme', 10_000)).toBeNull();
    expect(await store.lockTenant('other', 10_000)).not.toBeNull();
    await store.unlockTenant('acme', 'not-the-token');
    expect(await store.lockTenant('acme', 10_000)).toBeNull();
    await store.unlockTenant('acme', token as string);
    expect(await store.lockTenant('acme', 100)).not.toBeNull();
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(await store.lockTenant('acme', 100)).not.toBeNull();
  });

  it('renewTenantLock should extend the lock its token holds, and not one it lost', async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    const token = (await store.lockTenant('acme', 200)) as string;
    await new Promise((resolve) => setTimeout(resolve, 120));
    expect(await store.renewTenantLock('acme', token, 10_000)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 150));
    // Past its first length, still held.
    expect(await store.lockTenant('acme', 10_000)).toBeNull();
    expect(await store.renewTenantLock('acme', 'not-the-token', 10_000)).toBe(false);
    await store.unlockTenant('acme', token);
    const other = await store.lockTenant('acme', 10_000);
    expect(other).not.toBeNull();
    expect(await store.renewTenantLock('acme', token, 10_000)).toBe(false);
    expect(await redis.client.get(`${redis.prefix}tenant-write-lock:acme`)).toBe(other);
  });

  it('nextRevision should stay above a floor and an observed revision', async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    const far = (Date.now() + 10 * 24 * 3_600_000) * 1000; // revisions are in microseconds
    expect(await store.nextRevision('acme', far)).toBe(far + 1);
    await store.observeRevision('other', far + 100);
    expect(await store.nextRevision('other')).toBe(far + 101);
  });

  it('nextRevision should exceed earlier revisions after the counters were wiped', async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    const before = await store.nextRevision('acme');
    await redis.cleanup();
    expect(await store.nextRevision('acme')).toBeGreaterThan(before);
  });

  it("nextRevision and observeRevision should let a tenant's counter expire long after its last revision, as a deleted tenant's does", async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    const week = 7 * 24 * 60 * 60 * 1000;
    const ttl = () => redis.client.pttl(`${redis.prefix}tenant-revision:acme`);
    const revision = await store.nextRevision('acme');
    expect(await ttl()).toBeGreaterThan(week);
    await redis.client.persist(`${redis.prefix}tenant-revision:acme`);
    await store.observeRevision('acme', revision + 1);
    expect(await ttl()).toBeGreaterThan(week);
    // Director's generation stays: it is not the tenant's.
    await store.observeGeneration(3);
    expect(await redis.client.pttl(`${redis.prefix}director-generation`)).toBe(-1);
  });

  it("observeDeletion should let a deleted tenant's generation expire long after its last deletion", async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    const week = 7 * 24 * 60 * 60 * 1000;
    const key = `${redis.prefix}tenant-deleted:acme`;
    await store.observeDeletion('acme', 3);
    expect(await redis.client.pttl(key)).toBeGreaterThan(week);
    // Deleted again (registered again since) while the same generation is in force, or a lower one
    // observed (a rebuild): the generation stays, and its expiry counts from then.
    await redis.client.pexpire(key, 1_000_000);
    await store.observeDeletion('acme', 3);
    expect(await redis.client.pttl(key)).toBeGreaterThan(week);
    await redis.client.pexpire(key, 1_000_000);
    await store.observeDeletion('acme', 2);
    expect(await redis.client.pttl(key)).toBeGreaterThan(week);
    expect(await store.deletionGeneration('acme')).toBe(3);
  });

  it('observeGeneration should keep the highest generation', async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    expect(await store.lastGeneration()).toBe(-1);
    await store.observeGeneration(0);
    expect(await store.lastGeneration()).toBe(0);
    await store.observeGeneration(7);
    await store.observeGeneration(3);
    expect(await store.lastGeneration()).toBe(7);
  });

  it('observeDeletion should keep the highest generation of each tenant', async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    expect(await store.deletionGeneration('acme')).toBe(-1);
    await store.observeDeletion('acme', 5);
    await store.observeDeletion('acme', 4);
    await store.observeDeletion('other', 9);
    expect(await store.deletionGeneration('acme')).toBe(5);
    expect(await store.deletionGeneration('other')).toBe(9);
  });

  /** Redis's clock, in milliseconds. */
  async function redisTime(): Promise<number> {
    const [seconds, micros] = await redis.client.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  }

  it('nextRevisionStamp should give the revision with the time Redis assigned it at', async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    const before = await redisTime();
    const { revision, at } = await store.nextRevisionStamp('acme');
    const after = await redisTime();
    expect(at.getTime()).toBeGreaterThanOrEqual(before);
    expect(at.getTime()).toBeLessThanOrEqual(after);
    // The same counter as nextRevision's: µs of the same clock reading, above a floor.
    expect(Math.floor(revision / 1000)).toBe(at.getTime());
    expect(await store.nextRevision('acme')).toBeGreaterThan(revision);
    const far = revision + 10_000_000_000;
    expect(await store.nextRevisionStamp('acme', far)).toEqual({ revision: far + 1, at: expect.any(Date) });
  });

  it("pushStarted should keep Redis's time when a generation was first handled, for a month, each generation its own", async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    const before = await redisTime();
    const first = await store.pushStarted(7);
    expect(first.getTime()).toBeGreaterThanOrEqual(before);
    expect(first.getTime()).toBeLessThanOrEqual(await redisTime());
    await sleep(5);
    expect(await store.pushStarted(7)).toEqual(first);
    const eighth = await store.pushStarted(8);
    expect(eighth.getTime()).toBeGreaterThan(first.getTime());
    expect(await redis.client.pttl(`${redis.prefix}director-push-started:7`)).toBeGreaterThan(
      7 * 24 * 60 * 60 * 1000,
    );
    // Redis wiped: the generation handled again from then on starts anew.
    await redis.cleanup();
    expect((await store.pushStarted(7)).getTime()).toBeGreaterThan(first.getTime());
  });

  it('generationStarted should be the newest generation whose push began, never lowered by an older one', async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    expect(await store.generationStarted()).toBe(-1);
    await store.pushStarted(7);
    expect(await store.generationStarted()).toBe(7);
    await store.pushStarted(5);
    expect(await store.generationStarted()).toBe(7);
    await store.pushStarted(8);
    expect(await store.generationStarted()).toBe(8);
    // Director's last applied generation is its own.
    expect(await store.lastGeneration()).toBe(-1);
  });

  it('pushStarted should read a time a registrar recorded as an ISO time', async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    await redis.client.set(`${redis.prefix}director-push-started:7`, '2026-03-01T10:00:00.000Z');
    expect(await store.pushStarted(7)).toEqual(new Date('2026-03-01T10:00:00.000Z'));
  });

  it("pushStarted should record Redis's time as an ISO time, which a registrar of an earlier version reads", async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    const started = await store.pushStarted(7);
    const stored = (await redis.client.get(`${redis.prefix}director-push-started:7`)) as string;
    // An earlier registrar (mid rolling upgrade) reads the marker with `new Date(value)` and writes its own
    // marker with toISOString(): the same text, the same instant.
    expect(stored).toBe(started.toISOString());
    expect(new Date(stored).getTime()).toBe(started.getTime());
  });

  it("pushStarted should still read a marker recorded as milliseconds of Redis's clock", async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    await redis.client.set(`${redis.prefix}director-push-started:7`, '1772359200000');
    expect(await store.pushStarted(7)).toEqual(new Date(1772359200000));
  });

  it("the marker's ISO time should be toISOString()'s for any instant of Redis's clock", async () => {
    const instants = [
      0,
      Date.UTC(1999, 11, 31, 23, 59, 59, 999),
      Date.UTC(2000, 1, 29, 12, 0, 0, 1),
      Date.UTC(2000, 2, 1),
      Date.UTC(2024, 1, 29, 23, 59, 59, 999),
      Date.UTC(2026, 11, 31, 23, 59, 59, 999),
      Date.UTC(2027, 0, 1),
      Date.UTC(2100, 1, 28, 6, 7, 8, 9),
      Date.UTC(2100, 2, 1),
      Date.UTC(2400, 1, 29),
      Date.UTC(9999, 11, 31, 23, 59, 59, 999),
      ...Array.from({ length: 200 }, (_, i) => Date.UTC(2026, 0, 1) + i * 1_234_567_891_011),
    ];
    // Redis's TIME answers seconds and microseconds, as strings.
    const formatted = (await redis.client.eval(
      `${ISO_TIME_LUA}
local out = {}
for i = 1, #ARGV, 2 do out[#out + 1] = isoTime(ARGV[i], ARGV[i + 1]) end
return out`,
      0,
      ...instants.flatMap((ms) => [String(Math.floor(ms / 1000)), String((ms % 1000) * 1000 + 999)]),
    )) as string[];
    expect(formatted).toEqual(instants.map((ms) => new Date(ms).toISOString()));
  });

  it('markRebuilt should be remembered until Redis is wiped', async () => {
    const store = createRegistrarStateStore(redis.client, redis.prefix);
    expect(await store.isRebuilt()).toBe(false);
    await store.markRebuilt(new Date());
    expect(await store.isRebuilt()).toBe(true);
    await redis.cleanup();
    expect(await store.isRebuilt()).toBe(false);
  });
});

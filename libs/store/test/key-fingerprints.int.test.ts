import { createKeyFingerprintStore } from '@urs/store';
import { testRedisPerTest } from '@urs/testkit';

describe('createKeyFingerprintStore', () => {
  const redis = testRedisPerTest();

  it('claim should keep the first fingerprint of a key id, whoever claims it later, and get should read it', async () => {
    const store = createKeyFingerprintStore(redis.client, redis.prefix);
    expect(await store.get('k2')).toBeNull();
    const claims = await Promise.all(['first', 'second', 'third'].map((value) => store.claim('k2', value)));
    // Concurrent claims all answer the one that won.
    expect(new Set(claims).size).toBe(1);
    expect(await store.get('k2')).toBe(claims[0]);
    expect(await store.claim('k2', 'later')).toBe(claims[0]);
    expect(await store.get('k1')).toBeNull();
  });

  it("where should name the Redis key that holds a key id's fingerprint, for an operator to delete", async () => {
    const store = createKeyFingerprintStore(redis.client, redis.prefix);
    await store.claim('k2', 'fingerprint');
    expect(store.where('k2')).toBe(`${redis.prefix}secret-key-fingerprint:k2`);
    expect(await redis.client.get(store.where('k2'))).toBe('fingerprint');
  });
});

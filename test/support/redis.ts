import Redis from 'ioredis';
import { testInfra } from './infra';
import { uniqueId } from './wait';

export interface TestRedis {
  /** A client on the resolved test Redis; it does NOT add the prefix itself. */
  client: Redis;
  /** Unique to this helper, ends with ":"; pass it as the key prefix of the code under test. */
  prefix: string;
  /** `prefix + name`. */
  key(name: string): string;
  /** Deletes every key containing the prefix (SCAN, never KEYS); returns how many. */
  cleanup(): Promise<number>;
  /** cleanup(), then closes the client. Call it in afterAll/afterEach. */
  close(): Promise<void>;
}

/** Redis 7.0 (the machine's server) rejects CLIENT SETINFO, which ioredis >= 5.8 sends on connect. */
const CLIENT_OPTIONS = { disableClientInfo: true, maxRetriesPerRequest: 3 } as const;

/**
 * A Redis client plus a unique key prefix, and a cleanup that deletes the prefix's keys. Keys are
 * matched with `*<prefix>*` so that keys of libraries that put their own head before the prefix
 * (Bottleneck writes `b_<id>_…`) go too; the prefix is random, so nothing else matches.
 */
export function createTestRedis(prefix = uniqueId('test')): TestRedis {
  const fullPrefix = prefix.endsWith(':') ? prefix : `${prefix}:`;
  const client = new Redis(testInfra().redisUrl, CLIENT_OPTIONS);
  const cleanup = (): Promise<number> => deleteKeysMatching(client, `*${fullPrefix}*`);
  return {
    client,
    prefix: fullPrefix,
    key: (name) => `${fullPrefix}${name}`,
    cleanup,
    close: async () => {
      try {
        await cleanup();
      } finally {
        await client.quit();
      }
    },
  };
}

/** Deletes every key matching a glob `pattern`, walking the keyspace with SCAN. */
export async function deleteKeysMatching(client: Redis, pattern: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
    cursor = next;
    if (keys.length > 0) deleted += await client.unlink(...keys);
  } while (cursor !== '0');
  return deleted;
}

/**
 * For the calling `describe` block: a fresh `createTestRedis()` before each test, closed (its keys
 * deleted) after it. The returned object always stands for the current test's one; using it outside a
 * test throws.
 */
export function testRedisPerTest(): TestRedis {
  let current: TestRedis | undefined;
  beforeEach(() => {
    current = createTestRedis();
  });
  afterEach(async () => {
    const closing = current;
    current = undefined;
    await closing?.close();
  });
  const now = (): TestRedis => {
    if (current === undefined)
      throw new Error('testRedisPerTest: the test Redis exists only while a test runs');
    return current;
  };
  return {
    get client() {
      return now().client;
    },
    get prefix() {
      return now().prefix;
    },
    key: (name) => now().key(name),
    cleanup: () => now().cleanup(),
    close: () => now().close(),
  };
}

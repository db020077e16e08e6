import { randomUUID } from 'node:crypto';
import type { Agent } from 'node:https';
import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import type { Simulator } from '@urs/simulator';
import { type LogLine, type TestRedis, capturingLogger, createTestRedis } from '@urs/testkit';
import {
  type CallLimiter,
  type DefenderClient,
  DefenderError,
  type DefenderClientDeps,
  type DefenderApp,
  type QuotaGate,
  type SharedLimiterOptions,
  createDefenderClient,
  createHttpsAgent,
  createLocalLimiter,
  createLocalQuotaGate,
  createSharedLimiter,
} from '../src';

export interface TestApp {
  azureTenantId: string;
  clientId: string;
  clientSecret: string;
}

/** A fresh tenant id, client id and a secret that looks like an Entra secret Value. */
export function newApp(): TestApp {
  return {
    azureTenantId: randomUUID(),
    clientId: randomUUID(),
    clientSecret: `Zx8Q~${randomUUID().replace(/-/g, '')}Sec`,
  };
}

/** The app `app` of tenant `azureTenantId`: whose quota a call counts in. */
export function appOf(azureTenantId: string): DefenderApp {
  return { azureTenantId, clientId: 'app' };
}

/** A client of the simulator's tenant, trusting the simulator's CA through the https agent. */
export function simClient(
  sim: Simulator,
  app: TestApp,
  overrides: Partial<DefenderClientDeps> & { agent?: Agent } = {},
): {
  client: DefenderClient;
  limiter: CallLimiter;
  quota: QuotaGate;
  agent: Agent;
  close: () => Promise<void>;
} {
  const agent = overrides.agent ?? createHttpsAgent({ extraCa: sim.caPem });
  const limiter = overrides.limiter ?? createLocalLimiter();
  const quota = overrides.quota ?? createLocalQuotaGate();
  const client = createDefenderClient(app, {
    limiter,
    quota,
    logger: silentLogger,
    overrides: { authorityHost: sim.baseUrl, apiBase: sim.baseUrl },
    httpsAgent: agent,
    retryPolicy: retryPolicy({ maxAttempts: 6, initialDelayMs: 10, maxDelayMs: 100 }),
    requestTimeoutMs: 2_000,
    ...overrides,
  });
  return {
    client,
    limiter,
    quota,
    agent,
    async close() {
      client.close();
      await limiter.close();
      agent.destroy();
    },
  };
}

/** The DefenderError `run` fails with, on a fresh client of `app`; throws when it does not fail so. */
export async function failureOf(
  sim: Simulator,
  app: TestApp,
  run: (client: DefenderClient) => Promise<unknown>,
): Promise<DefenderError> {
  const { client, close } = simClient(sim, app);
  try {
    await run(client);
  } catch (error) {
    if (error instanceof DefenderError) return error;
    throw error;
  } finally {
    await close();
  }
  throw new Error('expected a DefenderError');
}

/**
 * Another call holding the limiter's only slot until `free()` (a bulk export page of another process, say);
 * `busy` settles once it has given the slot back. Resolves once the slot is held.
 */
export async function holdOnlySlot(limiter: CallLimiter): Promise<{ free: () => void; busy: Promise<void> }> {
  let free: () => void = () => undefined;
  let held: () => void = () => undefined;
  const slotHeld = new Promise<void>((resolve) => (held = resolve));
  const busy = limiter.schedule(
    () =>
      new Promise<void>((resolve) => {
        free = resolve;
        held();
      }),
  );
  await slotHeld;
  return { free: () => free(), busy };
}

/** A promise the test settles when it likes. */
export function gate(): { opened: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

/**
 * For the calling file or `describe` block: a fresh test Redis before each test, and the shared limiters
 * `create` makes over it, each logging into `lines` (emptied before each test); after each test the limiters
 * are closed, then the Redis (its keys deleted). The returned object stands for the current test's ones.
 */
export function sharedLimitersPerTest(): {
  readonly redis: TestRedis;
  readonly lines: LogLine[];
  create: (options?: Omit<SharedLimiterOptions, 'redis' | 'keyPrefix' | 'logger'>) => Promise<CallLimiter>;
} {
  let redis: TestRedis | undefined;
  let limiters: CallLimiter[] = [];
  let lines: LogLine[] = [];
  beforeEach(() => {
    redis = createTestRedis();
    limiters = [];
    lines = [];
  });
  afterEach(async () => {
    await Promise.all(limiters.map((limiter) => limiter.close()));
    await redis?.close();
    redis = undefined;
  });
  const current = (): TestRedis => {
    if (redis === undefined)
      throw new Error('sharedLimitersPerTest: the test Redis exists only while a test runs');
    return redis;
  };
  return {
    get redis() {
      return current();
    },
    get lines() {
      return lines;
    },
    create: async (options = {}) => {
      const made = await createSharedLimiter({
        redis: current().client,
        keyPrefix: current().prefix,
        logger: capturingLogger(lines),
        ...options,
      });
      limiters.push(made);
      return made;
    },
  };
}

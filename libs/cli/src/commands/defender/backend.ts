import type { Agent } from 'node:https';
import {
  defenderOverrides,
  defenderSettings,
  readDefenderScope,
  readOptionalString,
  readPemFile,
  redisConfig,
} from '@urs/config';
import {
  type CallLimiter,
  type DefenderEndpointOverrides,
  type QuotaGate,
  createLocalLimiter,
  createLocalQuotaGate,
  createRedisQuotaGate,
  createHttpsAgent,
  createSharedLimiter,
} from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { closeRedis, createRedis } from '@urs/store';

/** The limiter and quota a CLI run uses, and how to release them. */
export interface Backend {
  limiter: CallLimiter;
  quota: QuotaGate;
  /** `redis` when shared with the running pipeline, `local` when only this process counts. */
  kind: 'redis' | 'local';
  overrides: DefenderEndpointOverrides;
  httpsAgent: Agent;
  close(): Promise<void>;
}

/** How long the CLI waits for Redis before it falls back to an in-process limiter, in milliseconds. */
const REDIS_CONNECT_TIMEOUT_MS = 2_000;

/**
 * The CLI shares the pipeline's limiter and quota when Redis answers (REDIS_URL, URS_REDIS_PREFIX, as the
 * services read them): a manual run then neither exceeds the 10 calls in flight nor spends quota the
 * pipeline counts on. When Redis is not reachable (or `--no-redis`), the run uses an in-process limiter
 * and quota with the same limits: correct for this process alone, and said so on stderr.
 */
export async function openBackend(
  env: NodeJS.ProcessEnv,
  useRedis: boolean,
  warn: (line: string) => void,
): Promise<Backend> {
  const overrides: DefenderEndpointOverrides = { ...defenderOverrides(env) };
  if (readOptionalString(env, 'URS_DEFENDER_SCOPE') !== undefined)
    overrides.scope = readDefenderScope(env, 'URS_DEFENDER_SCOPE');
  // URS_DEFENDER_CA_FILE: a PEM file of an extra CA to trust besides the system ones (the simulator's).
  // NODE_EXTRA_CA_CERTS does the same for a whole process; this variable also works when the command runs
  // inside another process (tests).
  const extraCa = readPemFile(env, 'URS_DEFENDER_CA_FILE');
  const httpsAgent = createHttpsAgent(extraCa === undefined ? {} : { extraCa });
  const local = (): Backend => {
    const limiter = createLocalLimiter();
    return {
      limiter,
      quota: createLocalQuotaGate(),
      kind: 'local',
      overrides,
      httpsAgent,
      async close() {
        await limiter.close();
        httpsAgent.destroy();
      },
    };
  };
  if (!useRedis) return local();
  const config = redisConfig(env);
  // The services' client, READONLY reconnect included: a run during a failover reaches the new primary.
  const redis = createRedis(config, {
    connectionName: 'urs-cli',
    failFast: { connectTimeoutMs: REDIS_CONNECT_TIMEOUT_MS },
  });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
  } catch {
    redis.disconnect();
    warn(
      `Redis at ${new URL(config.url).host} is not reachable: using an in-process limiter and quota (this run alone is counted)`,
    );
    return local();
  }
  // The run joins the pipeline's stored limit and never writes it: a run without the deployment's
  // URS_DEFENDER_MAX_IN_FLIGHT would set every running service's limit to its own. Its own is used only
  // when the limiter has no stored settings yet; so with the vuln-fetchers' cap on bulk export pages, whose
  // own default (half the slots) is used only when none is stored.
  const { maxInFlight } = defenderSettings(env);
  const limiter = await createSharedLimiter({
    redis,
    keyPrefix: config.keyPrefix,
    maxConcurrent: maxInFlight,
    bulkMaxSlots: Math.ceil(maxInFlight / 2),
    joinStoredSettings: true,
    logger: silentLogger,
  });
  return {
    limiter,
    quota: createRedisQuotaGate(redis, config.keyPrefix),
    kind: 'redis',
    overrides,
    httpsAgent,
    async close() {
      await limiter.close();
      await closeRedis(redis);
      httpsAgent.destroy();
    },
  };
}

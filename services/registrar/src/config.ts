import {
  DEFAULT_METRICS_PORTS,
  defenderSettings,
  readInt,
  readList,
  readString,
  ConfigError,
  secretKeyConfig,
  type DefenderSettings,
  type Env,
  type SecretKeyConfig,
} from '@urs/config';

/** The registrar's own settings, and how its access check reaches Defender (`defenderSettings`). */
export interface RegistrarConfig extends DefenderSettings {
  /**
   * REST port. Env `URS_HTTP_PORT`, default 8080; 0 picks a free one. Not the port of /healthz, /readyz and
   * /metrics (`URS_METRICS_PORT`, default 9101) unless both are 0.
   */
  httpPort: number;
  /** Accepted bearer tokens. Env `URS_API_TOKENS` (comma-separated, required; each at least 16 characters). */
  apiTokens: string[];
  /** Largest accepted request body, in bytes. Env `URS_HTTP_MAX_BODY_BYTES`, default 65536 (64 KiB). */
  maxBodyBytes: number;
  /**
   * How often the registrar checks that Redis still holds the tenants (a wiped Redis is refilled from
   * `urs.tenants`) and writes again what it sent to `urs.tenants` and Redis failed to take, in milliseconds.
   * Env `URS_REBUILD_CHECK_MS`, default 5000.
   */
  rebuildCheckMs: number;
  /**
   * How often the registrar looks for stored secrets sealed with a retired key and re-seals a batch of them
   * with the active one, in milliseconds. Env `URS_RESEAL_CHECK_MS`, default 30000. Each look reads every
   * tenant record in Redis (to count them for `urs_secrets_on_retired_keys`), which the rebuild check's 5 s
   * would do twelve times a minute on every replica for a number that changes only during a key rotation.
   */
  resealCheckMs: number;
  /**
   * Records re-sealed at most per look (each a new revision on `urs.tenants`, read by every poller, scorer
   * and publisher). Env `URS_RESEAL_BATCH`, default 200: 10,000 tenants move to a new key in about 25 minutes.
   */
  resealBatch: number;
  /** Longest wait of the `/defender/test` check, in milliseconds. Env `URS_ACCESS_TEST_TIMEOUT_MS`, default 30000. */
  accessTestTimeoutMs: number;
  /** Consumer group of the Director pushes. Env `URS_CONSUMER_GROUP`, default `{URS_TOPIC_PREFIX}urs.registrar`. */
  groupId: string;
  secretKeys: SecretKeyConfig;
}

/**
 * `URS_HTTP_PORT`, refused when it is the metrics port: the second server to listen would fail the start with
 * Node's EADDRINUSE, which names neither variable. 0 for both is fine, each picks a free port.
 */
function readHttpPort(env: Env): number {
  const httpPort = readInt(env, 'URS_HTTP_PORT', { fallback: 8080, min: 0, max: 65535 });
  // Read as serviceConfig reads it for the registrar, which checks its range.
  const metricsPort = readInt(env, 'URS_METRICS_PORT', { fallback: DEFAULT_METRICS_PORTS['registrar'] ?? 0 });
  if (httpPort !== 0 && httpPort === metricsPort)
    throw new ConfigError(
      'URS_HTTP_PORT',
      `must differ from URS_METRICS_PORT: the REST API and /healthz, /readyz, /metrics each listen on a port of their own (both ${httpPort})`,
    );
  return httpPort;
}

/** How the example Secret's placeholders begin: a token left so is known to anyone who read the example. */
const PLACEHOLDER_PREFIX = 'REPLACE';

function isPlaceholderToken(token: string): boolean {
  return token.startsWith(PLACEHOLDER_PREFIX);
}

export function registrarConfig(env: Env): RegistrarConfig {
  const apiTokens = readList(env, 'URS_API_TOKENS');
  if (apiTokens.length === 0)
    throw new ConfigError('URS_API_TOKENS', 'is required (comma-separated bearer tokens)');
  if (apiTokens.some((token) => token.length < 16)) {
    throw new ConfigError('URS_API_TOKENS', 'must list tokens of at least 16 characters each');
  }
  if (apiTokens.some(isPlaceholderToken)) {
    throw new ConfigError(
      'URS_API_TOKENS',
      `lists a placeholder (a token starting with ${PLACEHOLDER_PREFIX}, as an example Secret writes it): ` +
        'replace it with a random one (openssl rand -hex 16)',
    );
  }
  return {
    httpPort: readHttpPort(env),
    apiTokens,
    maxBodyBytes: readInt(env, 'URS_HTTP_MAX_BODY_BYTES', {
      fallback: 64 * 1024,
      min: 1024,
      max: 16 * 1024 * 1024,
    }),
    rebuildCheckMs: readInt(env, 'URS_REBUILD_CHECK_MS', { fallback: 5_000, min: 100 }),
    resealCheckMs: readInt(env, 'URS_RESEAL_CHECK_MS', { fallback: 30_000, min: 100 }),
    resealBatch: readInt(env, 'URS_RESEAL_BATCH', { fallback: 200, min: 1, max: 10_000 }),
    accessTestTimeoutMs: readInt(env, 'URS_ACCESS_TEST_TIMEOUT_MS', { fallback: 30_000, min: 1_000 }),
    groupId: readString(env, 'URS_CONSUMER_GROUP', `${readString(env, 'URS_TOPIC_PREFIX', '')}urs.registrar`),
    secretKeys: secretKeyConfig(env),
    ...defenderSettings(env),
  };
}

import {
  defenderOverrides,
  readEnum,
  readInt,
  readOptionalString,
  readList,
  readString,
  ConfigError,
  secretKeyConfig,
  type DefenderOverrides,
  type Env,
  type SecretKeyConfig,
} from '@urs/config';

export interface RegistrarConfig {
  /** REST port. Env `URS_HTTP_PORT`, default 8080; 0 picks a free one. */
  httpPort: number;
  /** Accepted bearer tokens. Env `URS_API_TOKENS` (comma-separated, required; each at least 16 characters). */
  apiTokens: string[];
  /** Largest accepted request body, in bytes. Env `URS_HTTP_MAX_BODY_BYTES`, default 65536 (64 KiB). */
  maxBodyBytes: number;
  /**
   * How often the registrar checks that Redis still holds the tenants (a wiped Redis is refilled from
   * `urs.tenants`), in milliseconds. Env `URS_REBUILD_CHECK_MS`, default 5000.
   */
  rebuildCheckMs: number;
  /** Longest wait of the `/defender/test` check, in milliseconds. Env `URS_ACCESS_TEST_TIMEOUT_MS`, default 30000. */
  accessTestTimeoutMs: number;
  /** Consumer group of the Director pushes. Env `URS_CONSUMER_GROUP`, default `{URS_TOPIC_PREFIX}urs.registrar`. */
  groupId: string;
  secretKeys: SecretKeyConfig;
  defender: DefenderOverrides;
  /** PEM file of an extra CA to trust for Entra/MDE (a private test CA). Env `URS_DEFENDER_CA_FILE`, default none. */
  caFile: string | undefined;
  /**
   * MDE calls in flight across every process sharing the limiter. Env `URS_DEFENDER_MAX_IN_FLIGHT`, default 10;
   * every service must be given the same value (the last one to start writes it to the shared limiter).
   */
  maxInFlight: number;
  /**
   * `microsoft`: calls wait for the tenant's API quota kept in Redis (the default, the only setting for real
   * tenants); `off`: no quota wait, for a simulator whose quotas are off (benchmarks). Env `URS_DEFENDER_QUOTAS`.
   */
  quotas: 'microsoft' | 'off';
}

export function registrarConfig(env: Env): RegistrarConfig {
  const apiTokens = readList(env, 'URS_API_TOKENS');
  if (apiTokens.length === 0)
    throw new ConfigError('URS_API_TOKENS', 'is required (comma-separated bearer tokens)');
  if (apiTokens.some((token) => token.length < 16)) {
    throw new ConfigError('URS_API_TOKENS', 'must list tokens of at least 16 characters each');
  }
  return {
    httpPort: readInt(env, 'URS_HTTP_PORT', { fallback: 8080, min: 0, max: 65535 }),
    apiTokens,
    maxBodyBytes: readInt(env, 'URS_HTTP_MAX_BODY_BYTES', {
      fallback: 64 * 1024,
      min: 1024,
      max: 16 * 1024 * 1024,
    }),
    rebuildCheckMs: readInt(env, 'URS_REBUILD_CHECK_MS', { fallback: 5_000, min: 100 }),
    accessTestTimeoutMs: readInt(env, 'URS_ACCESS_TEST_TIMEOUT_MS', { fallback: 30_000, min: 1_000 }),
    groupId: readString(env, 'URS_CONSUMER_GROUP', `${readString(env, 'URS_TOPIC_PREFIX', '')}urs.registrar`),
    secretKeys: secretKeyConfig(env),
    defender: defenderOverrides(env),
    caFile: readOptionalString(env, 'URS_DEFENDER_CA_FILE'),
    maxInFlight: readInt(env, 'URS_DEFENDER_MAX_IN_FLIGHT', { fallback: 10, min: 1, max: 100 }),
    quotas: readEnum(env, 'URS_DEFENDER_QUOTAS', ['microsoft', 'off'] as const, 'microsoft'),
  };
}

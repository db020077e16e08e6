import {
  ConfigError,
  type Env,
  readBool,
  readEnum,
  readInt,
  readList,
  readOptionalString,
  readString,
  readUrl,
} from './env';
import { readPemFile } from './files';
import { topicLayout, topicsConfig, type TopicLayout, type Topics } from './topics';

export interface KafkaConfig {
  brokers: string[];
  clientId: string;
  /** TLS to the brokers. Env `KAFKA_SSL`, default false. */
  ssl: boolean;
  sasl?: { mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512'; username: string; password: string };
}

/** `KAFKA_BROKERS` (default `127.0.0.1:9092`), `KAFKA_SSL`, `KAFKA_SASL_MECHANISM|USERNAME|PASSWORD`. */
export function kafkaConfig(env: Env, clientId: string): KafkaConfig {
  const brokers = readList(env, 'KAFKA_BROKERS', ['127.0.0.1:9092']);
  for (const broker of brokers) {
    if (!/^[^\s:]+:\d+$/.test(broker))
      throw new ConfigError('KAFKA_BROKERS', `must list host:port pairs (got "${broker}")`);
  }
  const config: KafkaConfig = { brokers, clientId, ssl: readBool(env, 'KAFKA_SSL', false) };
  const mechanism = readOptionalString(env, 'KAFKA_SASL_MECHANISM');
  // Credentials without a mechanism were dropped, and the client connected without SASL: a broker that needs
  // it refused every connection with no word of the variables. Their values are never quoted.
  const credentials = ['KAFKA_SASL_USERNAME', 'KAFKA_SASL_PASSWORD'].filter(
    (name) => readOptionalString(env, name) !== undefined,
  );
  if (mechanism === undefined && credentials.length > 0)
    throw new ConfigError(
      'KAFKA_SASL_MECHANISM',
      `is required when ${credentials.join(' and ')} ${credentials.length > 1 ? 'are' : 'is'} set ` +
        '(plain, scram-sha-256 or scram-sha-512); without it the client would connect without SASL',
    );
  if (mechanism !== undefined) {
    config.sasl = {
      mechanism: readEnum(
        env,
        'KAFKA_SASL_MECHANISM',
        ['plain', 'scram-sha-256', 'scram-sha-512'] as const,
        'plain',
      ),
      username: readString(env, 'KAFKA_SASL_USERNAME'),
      password: readString(env, 'KAFKA_SASL_PASSWORD'),
    };
  }
  return config;
}

export interface RedisConfig {
  url: string;
  /** Prefix of every key this deployment writes. Env `URS_REDIS_PREFIX`, default `urs:`. */
  keyPrefix: string;
  /**
   * Cycles of score history kept per tenant: the scorer keeps that many, the registrar's API answers up to that
   * many. Each is a hash of one entry per device (~230 bytes of Redis a device). Env
   * `URS_SCORE_HISTORY_CYCLES`, default 10, 1–100.
   */
  scoreHistoryCycles: number;
}

/** What a REDIS_URL must be, in the words of the error that refuses one. */
const REDIS_URL_RULE =
  'must be redis://[user:password@]host[:port][/db] or rediss://… (TLS), db a whole number';

/**
 * `REDIS_URL`, checked here because ioredis reads anything: a URL of another scheme (`http://host:6390`) as
 * the path of a Unix socket it then retries for ever, a database that is no number (`redis://host/abc`) as
 * SELECT NaN, refused only once connected. The value is never quoted: it may carry a password.
 */
function readRedisUrl(env: Env): string {
  const value = readUrl(env, 'REDIS_URL', 'redis://127.0.0.1:6379');
  const url = new URL(value);
  const refuse = (why: string): never => {
    throw new ConfigError('REDIS_URL', `${REDIS_URL_RULE} (${why})`);
  };
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') refuse(`got scheme "${url.protocol}"`);
  if (url.hostname === '') refuse('got no host');
  // ioredis reads the path after the first / as the database, and a `db` query item when there is none.
  const db = url.pathname.length > 1 ? url.pathname.slice(1) : url.searchParams.get('db');
  if (db !== null && !/^\d{1,9}$/.test(db)) refuse('got a database that is not a whole number');
  return value;
}

/** `REDIS_URL` (default `redis://127.0.0.1:6379`), `URS_REDIS_PREFIX` (default `urs:`), `URS_SCORE_HISTORY_CYCLES`. */
export function redisConfig(env: Env): RedisConfig {
  return {
    url: readRedisUrl(env),
    keyPrefix: readString(env, 'URS_REDIS_PREFIX', 'urs:'),
    scoreHistoryCycles: readInt(env, 'URS_SCORE_HISTORY_CYCLES', { fallback: 10, min: 1, max: 100 }),
  };
}

export interface SecretKeyConfig {
  /** Key id written next to each ciphertext, so keys can rotate. */
  activeKeyId: string;
  /** Every key that can decrypt: the active one and the previous ones. */
  keys: Map<string, Buffer>;
}

/** How an example's placeholder key begins (deploy/k8s/secret.example.yaml): known to anyone who read it. */
const PLACEHOLDER_PREFIX = 'REPLACE';

function decodeKey(variable: string, text: string): Buffer {
  // Named as a placeholder, not as a malformed key, and never echoed: the value is a key's place.
  if (text.startsWith(PLACEHOLDER_PREFIX))
    throw new ConfigError(
      variable,
      `holds a placeholder (a value starting with ${PLACEHOLDER_PREFIX}, as the example Secret writes it): ` +
        'replace it with a random key (openssl rand -base64 32)',
    );
  const key = Buffer.from(text, 'base64');
  if (key.length !== 32 || key.toString('base64').replace(/=+$/, '') !== text.replace(/=+$/, '')) {
    throw new ConfigError(variable, 'must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)');
  }
  return key;
}

/**
 * `URS_SECRET_KEY` (32 bytes, base64; required), `URS_SECRET_KEY_ID` (default `k1`), and
 * `URS_SECRET_KEYS_PREVIOUS` (`id:base64,id:base64`) for records still encrypted with a retired key.
 */
export function secretKeyConfig(env: Env): SecretKeyConfig {
  const activeKeyId = readString(env, 'URS_SECRET_KEY_ID', 'k1');
  if (!/^[A-Za-z0-9._-]{1,32}$/.test(activeKeyId)) {
    throw new ConfigError('URS_SECRET_KEY_ID', 'must be 1–32 letters, digits, dots, dashes or underscores');
  }
  const keys = new Map<string, Buffer>([
    [activeKeyId, decodeKey('URS_SECRET_KEY', readString(env, 'URS_SECRET_KEY'))],
  ]);
  for (const entry of readList(env, 'URS_SECRET_KEYS_PREVIOUS')) {
    const separator = entry.indexOf(':');
    if (separator <= 0) throw new ConfigError('URS_SECRET_KEYS_PREVIOUS', 'must list id:base64key pairs');
    const id = entry.slice(0, separator);
    // A repeated id would replace a key, the active one included: new secrets sealed with a retired key.
    if (keys.has(id))
      throw new ConfigError(
        'URS_SECRET_KEYS_PREVIOUS',
        `repeats key id ${id} (each id once, the active URS_SECRET_KEY_ID included)`,
      );
    keys.set(id, decodeKey('URS_SECRET_KEYS_PREVIOUS', entry.slice(separator + 1)));
  }
  return { activeKeyId, keys };
}

/** The US Government clouds, whose token scope Microsoft does not document, and their scope variables. */
const SCOPE_VARIABLES = {
  gcc: 'URS_DEFENDER_SCOPE_GCC',
  'gcc-high': 'URS_DEFENDER_SCOPE_GCC_HIGH',
  dod: 'URS_DEFENDER_SCOPE_DOD',
} as const;
export type GovernmentCloud = keyof typeof SCOPE_VARIABLES;

export interface DefenderOverrides {
  /** Replaces every tenant's Entra authority host (tests, the simulator). Env `URS_DEFENDER_AUTHORITY_HOST`. */
  authorityHost?: string;
  /** Replaces every tenant's MDE API base URL. Env `URS_DEFENDER_API_BASE`. */
  apiBase?: string;
  /**
   * Replaces the token scope of the tenants of one US Government cloud. Env `URS_DEFENDER_SCOPE_GCC` (default
   * `https://api-gcc.securitycenter.microsoft.us/.default`), `URS_DEFENDER_SCOPE_GCC_HIGH` and
   * `URS_DEFENDER_SCOPE_DOD` (default `https://api-gov.securitycenter.microsoft.us/.default`).
   */
  scopes?: Partial<Record<GovernmentCloud, string>>;
}

/**
 * Microsoft 365 Defender's (the Microsoft Threat Protection app's) resource URI. Entra issues tokens for it,
 * but the Defender for Endpoint roles (Machine.Read.All, Vulnerability.Read.All) are WindowsDefenderATP's
 * permissions, not its: its tokens carry none of them, and every MDE call made with one is refused 403.
 */
const THREAT_PROTECTION_RESOURCE = 'https://api.security.microsoft.com';

/**
 * A client-credentials scope: a resource's URI followed by `/.default`, the only form Entra accepts for the
 * flow, naming a resource whose tokens can carry the Defender for Endpoint roles. Anything else would fail
 * every sign-in or call of the tenants it applies to, so it stops the start instead.
 */
export function readDefenderScope(env: Env, name: string): string {
  const value = readString(env, name);
  const resource = value.endsWith('/.default') ? value.slice(0, -'/.default'.length) : '';
  let valid = resource !== '' && !/\s/.test(value);
  try {
    if (valid) new URL(resource);
  } catch {
    valid = false;
  }
  if (!valid)
    throw new ConfigError(
      name,
      'must be a resource URI followed by /.default, e.g. ' +
        `https://api-gov.securitycenter.microsoft.us/.default (got "${value}")`,
    );
  // Entra reads the resource URI without its trailing slashes and in any case.
  if (resource.replace(/\/+$/, '').toLowerCase() === THREAT_PROTECTION_RESOURCE)
    throw new ConfigError(
      name,
      "must name the Defender for Endpoint API's resource (WindowsDefenderATP), not " +
        `${THREAT_PROTECTION_RESOURCE}, Microsoft 365 Defender's, whose tokens carry none of its roles ` +
        `(Machine.Read.All, Vulnerability.Read.All), so every call would be refused 403 (got "${value}")`,
    );
  return value;
}

/**
 * A Defender override URL: https only. The token endpoint is sent the tenants' client secrets, and the API
 * their tokens: over http they would cross the network in clear.
 */
function readHttpsUrl(env: Env, name: string): string {
  const value = readUrl(env, name);
  if (new URL(value).protocol !== 'https:')
    throw new ConfigError(
      name,
      'must be an https:// URL: client secrets and tokens are sent to it, and would cross the network in clear',
    );
  return value;
}

export function defenderOverrides(env: Env): DefenderOverrides {
  const overrides: DefenderOverrides = {};
  if (readOptionalString(env, 'URS_DEFENDER_AUTHORITY_HOST') !== undefined) {
    overrides.authorityHost = readHttpsUrl(env, 'URS_DEFENDER_AUTHORITY_HOST');
  }
  if (readOptionalString(env, 'URS_DEFENDER_API_BASE') !== undefined) {
    overrides.apiBase = readHttpsUrl(env, 'URS_DEFENDER_API_BASE');
  }
  const scopes: Partial<Record<GovernmentCloud, string>> = {};
  for (const [cloud, variable] of Object.entries(SCOPE_VARIABLES) as [GovernmentCloud, string][]) {
    if (readOptionalString(env, variable) !== undefined) scopes[cloud] = readDefenderScope(env, variable);
  }
  if (Object.keys(scopes).length > 0) overrides.scopes = scopes;
  return overrides;
}

/** How a stage's consumer group takes in its input topic (group, session timeout, partitions at once). */
export interface ConsumerSettings {
  /** Consumer group of the input topic. Env `URS_CONSUMER_GROUP`, default `{URS_TOPIC_PREFIX}urs.{service}`. */
  groupId: string;
  /**
   * How long the group waits for a silent member before its partitions move, ms. Env
   * `URS_CONSUMER_SESSION_TIMEOUT_MS`, default 30000, 6000–1800000 (the broker's default
   * `group.min.session.timeout.ms` and `group.max.session.timeout.ms`: outside them the broker refuses the
   * consumer, INVALID_SESSION_TIMEOUT, which then stops for good).
   */
  sessionTimeoutMs: number;
  /** Partitions handled at once, 1–100. Env `URS_PARTITIONS_CONCURRENCY`, default given by the service. */
  partitionsConcurrency: number;
}

/**
 * The broker's default `group.min.session.timeout.ms` and `group.max.session.timeout.ms`. A session outside
 * them is refused INVALID_SESSION_TIMEOUT when the consumer joins, and the stage stops for good naming no
 * variable: refused here instead, at start.
 */
const MIN_SESSION_TIMEOUT_MS = 6_000;
const MAX_SESSION_TIMEOUT_MS = 1_800_000;

function readSessionTimeoutMs(env: Env): number {
  const variable = 'URS_CONSUMER_SESSION_TIMEOUT_MS';
  const value = readInt(env, variable, { fallback: 30_000 });
  if (value < MIN_SESSION_TIMEOUT_MS)
    throw new ConfigError(
      variable,
      `must be ≥ ${MIN_SESSION_TIMEOUT_MS}: the broker's default group.min.session.timeout.ms, below which it refuses the consumer (INVALID_SESSION_TIMEOUT) (got ${value})`,
    );
  if (value > MAX_SESSION_TIMEOUT_MS)
    throw new ConfigError(
      variable,
      `must be ≤ ${MAX_SESSION_TIMEOUT_MS}: the broker's default group.max.session.timeout.ms, above which it refuses the consumer (INVALID_SESSION_TIMEOUT) (got ${value})`,
    );
  return value;
}

export function consumerSettings(
  env: Env,
  service: string,
  defaultPartitionsConcurrency: number,
): ConsumerSettings {
  const topicPrefix = readString(env, 'URS_TOPIC_PREFIX', '');
  return {
    groupId: readString(env, 'URS_CONSUMER_GROUP', `${topicPrefix}urs.${service}`),
    sessionTimeoutMs: readSessionTimeoutMs(env),
    partitionsConcurrency: readInt(env, 'URS_PARTITIONS_CONCURRENCY', {
      fallback: defaultPartitionsConcurrency,
      min: 1,
      max: 100,
    }),
  };
}

/** How a service reaches Microsoft Defender: what the poller, the vuln-fetcher and the registrar all read. */
export interface DefenderSettings {
  defender: DefenderOverrides;
  /**
   * PEM text of extra CAs to trust for Entra/MDE (a private test CA), read from the file env
   * `URS_DEFENDER_CA_FILE` names when the settings are read (see readPemFile). Default none.
   */
  extraCa: string | undefined;
  /**
   * MDE calls in flight across every process sharing the limiter, 1–100. Env `URS_DEFENDER_MAX_IN_FLIGHT`,
   * default 10; every service must be given the same value (the last one to start writes it to the shared limiter).
   */
  maxInFlight: number;
  /**
   * `microsoft`: calls wait for the tenant's API quota kept in Redis (the default, the only setting for real
   * tenants); `off`: no quota wait, for a simulator whose quotas are off (benchmarks). Env `URS_DEFENDER_QUOTAS`.
   */
  quotas: 'microsoft' | 'off';
  /**
   * How long one MDE call may go without an answer, and a device's vulnerabilities may take in all, in ms,
   * 1000–30000. Env `URS_DEFENDER_REQUEST_TIMEOUT_MS`, default 30000. A tenant whose API stops answering
   * holds the shared slots this long once before its calls go one at a time; at most 30 s, so a call plus a
   * slot's hand-off lease stays below the limiter's 60 s job expiration.
   */
  requestTimeoutMs: number;
  /**
   * How long one request to Entra ID for a token may take, in ms, 5000–300000, before the calls waiting for
   * it fail (retryably) and the request's connection is closed. Env `URS_TOKEN_REQUEST_TIMEOUT_MS`, default 60000.
   */
  tokenRequestTimeoutMs: number;
}

export function defenderSettings(env: Env): DefenderSettings {
  return {
    defender: defenderOverrides(env),
    extraCa: readPemFile(env, 'URS_DEFENDER_CA_FILE'),
    maxInFlight: readInt(env, 'URS_DEFENDER_MAX_IN_FLIGHT', { fallback: 10, min: 1, max: 100 }),
    quotas: readEnum(env, 'URS_DEFENDER_QUOTAS', ['microsoft', 'off'] as const, 'microsoft'),
    requestTimeoutMs: readInt(env, 'URS_DEFENDER_REQUEST_TIMEOUT_MS', {
      fallback: 30_000,
      min: 1_000,
      max: 30_000,
    }),
    tokenRequestTimeoutMs: readInt(env, 'URS_TOKEN_REQUEST_TIMEOUT_MS', {
      fallback: 60_000,
      min: 5_000,
      max: 300_000,
    }),
  };
}

export type LogLevelName = 'debug' | 'info' | 'warn' | 'error';

/** What every service reads: identity, logging, the bus, the store, topics, the metrics port. */
export interface ServiceConfig {
  service: string;
  logLevel: LogLevelName;
  kafka: KafkaConfig;
  redis: RedisConfig;
  topics: Topics;
  /** How the topics the service creates at start are laid out (`URS_TOPIC_PARTITIONS`, …). */
  topicLayout: TopicLayout;
  /** Port of /healthz, /readyz and /metrics. Env `URS_METRICS_PORT`; 0 picks a free port. */
  metricsPort: number;
  /**
   * How long a graceful stop may take before the process exits anyway (exit code 1), ms. Env
   * `URS_SHUTDOWN_TIMEOUT_MS`, default 15000, at least 2000. The stop's own waits are shares of it (the
   * runtime's stopTimes): a consumer's messages in flight get a third to finish and a third to stop once
   * aborted, the last third is for the rest of the close.
   */
  shutdownTimeoutMs: number;
}

/**
 * Each stage's own default port of /healthz, /readyz and /metrics: no two alike, so the five can share a host
 * or a network namespace (compose runs the poller and the vuln-fetcher beside the simulator).
 */
export const DEFAULT_METRICS_PORTS: Readonly<Record<string, number>> = {
  registrar: 9101,
  'vuln-fetcher': 9102,
  scorer: 9103,
  publisher: 9104,
  poller: 9105,
};

/**
 * The least URS_SHUTDOWN_TIMEOUT_MS: the third of it left after a consumer's drain must hold the rest of a
 * stop, which takes ~0.5 s with nothing in flight (leaving the group waits for the fetch under way, up to
 * 500 ms). Below it a stop whose messages in flight use their time would end past the timeout, exit code 1.
 */
const MIN_SHUTDOWN_TIMEOUT_MS = 2_000;

function readShutdownTimeoutMs(env: Env): number {
  const value = readInt(env, 'URS_SHUTDOWN_TIMEOUT_MS', { fallback: 15_000 });
  if (value < MIN_SHUTDOWN_TIMEOUT_MS) {
    throw new ConfigError(
      'URS_SHUTDOWN_TIMEOUT_MS',
      `must be ≥ ${MIN_SHUTDOWN_TIMEOUT_MS}: a third of it is left for closing after the messages in flight had the rest, and closing takes ~500 ms (got ${value})`,
    );
  }
  return value;
}

/** `defaultMetricsPort`: the stage's own (DEFAULT_METRICS_PORTS) unless given; 0 (a free port) for other names. */
export function serviceConfig(
  env: Env,
  service: string,
  defaultMetricsPort = DEFAULT_METRICS_PORTS[service] ?? 0,
): ServiceConfig {
  const instance = readString(env, 'URS_INSTANCE_ID', `${service}-${process.pid}`);
  return {
    service,
    logLevel: readEnum(env, 'URS_LOG_LEVEL', ['debug', 'info', 'warn', 'error'] as const, 'info'),
    kafka: kafkaConfig(env, instance),
    redis: redisConfig(env),
    topics: topicsConfig(env),
    topicLayout: topicLayout(env),
    metricsPort: readInt(env, 'URS_METRICS_PORT', { fallback: defaultMetricsPort, min: 0, max: 65535 }),
    shutdownTimeoutMs: readShutdownTimeoutMs(env),
  };
}

import { randomBytes } from 'node:crypto';
import fs, { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  consumerSettings,
  defenderSettings,
  kafkaConfig,
  readInt,
  readPemFile,
  redisConfig,
  secretKeyConfig,
  serviceConfig,
  topicLayout,
  topicsConfig,
} from '@urs/config';

describe('readInt', () => {
  it('should name the variable and the rule when out of range', () => {
    expect(() => readInt({ X: '5' }, 'X', { min: 10 })).toThrow('X must be ≥ 10 (got 5)');
  });

  it('should reject non-integers naming the variable', () => {
    expect(() => readInt({ X: '1.5' }, 'X')).toThrow(/^X must be a whole number/);
  });

  it('should use the fallback when unset or blank', () => {
    expect(readInt({ X: ' ' }, 'X', { fallback: 7 })).toBe(7);
  });

  it('readInt should cap a millisecond setting at the longest Node timer, naming the variable and the rule', () => {
    expect(readInt({ X_MS: '2147483647' }, 'X_MS')).toBe(2_147_483_647);
    expect(() => readInt({ X_MS: '2147483648' }, 'X_MS', { max: 10_000_000_000 })).toThrow(
      /^X_MS must be ≤ 2147483647 \(the longest timer Node runs.*\(got 2147483648\)$/,
    );
    expect(() => serviceConfig({ URS_SHUTDOWN_TIMEOUT_MS: '9999999999' }, 'scorer')).toThrow(
      /^URS_SHUTDOWN_TIMEOUT_MS must be ≤ 2147483647/,
    );
    // Not a duration: no cap of its own.
    expect(readInt({ X: '9999999999' }, 'X')).toBe(9_999_999_999);
  });
});

describe('redisConfig', () => {
  it('should refuse a REDIS_URL that is not a URL without quoting it (it may carry a password)', () => {
    const url = 'redis//:S3cret~pass@redis.internal:6379';
    expect(() => redisConfig({ REDIS_URL: url })).toThrow(
      /^REDIS_URL must be a URL such as scheme:\/\/host:port/,
    );
    try {
      redisConfig({ REDIS_URL: url });
    } catch (error) {
      expect((error as Error).message).not.toContain('S3cret');
    }
  });

  it('should refuse a REDIS_URL of another scheme naming the variable and the rule (ioredis reads it as a socket path)', () => {
    for (const url of ['http://127.0.0.1:6390', 'tcp://127.0.0.1:6379', 'unix:///tmp/redis.sock']) {
      expect(() => redisConfig({ REDIS_URL: url })).toThrow(
        /^REDIS_URL must be redis:\/\/\[user:password@\]host\[:port\]\[\/db\] or rediss:\/\/… \(TLS\), db a whole number \(got scheme "[a-z]+:"\)$/,
      );
    }
  });

  it('should refuse a REDIS_URL whose database is not a whole number, without quoting the URL', () => {
    for (const url of [
      'redis://:S3cret@host/abc',
      'redis://:S3cret@host/1.5',
      'redis://:S3cret@host/-1',
      'redis://:S3cret@host/0/1',
      'redis://:S3cret@host?db=abc',
    ]) {
      expect(() => redisConfig({ REDIS_URL: url })).toThrow(
        /^REDIS_URL must be redis:\/\/.* \(got a database that is not a whole number\)$/,
      );
      expect(() => redisConfig({ REDIS_URL: url })).not.toThrow(/S3cret/);
    }
  });

  it('should refuse a REDIS_URL without a host', () => {
    expect(() => redisConfig({ REDIS_URL: 'redis:///0' })).toThrow(/^REDIS_URL must be .* \(got no host\)$/);
  });

  it('should accept redis:// and rediss:// URLs with or without credentials, port and database', () => {
    for (const url of [
      'redis://127.0.0.1:6379',
      'redis://127.0.0.1:6379/',
      'redis://redis.internal/3',
      'redis://user:p%40ss@redis.internal:6380/15',
      'rediss://:secret@redis.example.com:6380/0',
      'redis://[::1]:6379/2',
      'redis://127.0.0.1:6379?db=4',
    ]) {
      expect(redisConfig({ REDIS_URL: url }).url).toBe(url);
    }
  });
});

describe('kafkaConfig', () => {
  it('should default to the local broker', () => {
    expect(kafkaConfig({}, 'c').brokers).toEqual(['127.0.0.1:9092']);
  });

  it('should reject a broker without a port', () => {
    expect(() => kafkaConfig({ KAFKA_BROKERS: 'kafka' }, 'c')).toThrow(/KAFKA_BROKERS/);
  });

  it('kafkaConfig should refuse SASL credentials without KAFKA_SASL_MECHANISM, never quoting them', () => {
    for (const env of [
      { KAFKA_SASL_USERNAME: 'urs-user', KAFKA_SASL_PASSWORD: 'Pa55-word' },
      { KAFKA_SASL_PASSWORD: 'Pa55-word' },
      { KAFKA_SASL_USERNAME: 'urs-user' },
    ]) {
      expect(() => kafkaConfig(env, 'c')).toThrow(/^KAFKA_SASL_MECHANISM is required/);
      try {
        kafkaConfig(env, 'c');
      } catch (error) {
        expect(String(error)).not.toMatch(/urs-user|Pa55-word/);
      }
    }
  });

  it('should require SASL credentials once a mechanism is set', () => {
    expect(() => kafkaConfig({ KAFKA_SASL_MECHANISM: 'plain' }, 'c')).toThrow(
      'KAFKA_SASL_USERNAME is required',
    );
  });
});

describe('redisConfig', () => {
  it('redisConfig should keep 10 cycles of score history unless told otherwise, and refuse 0 naming the variable', () => {
    expect(redisConfig({})).toEqual({
      url: 'redis://127.0.0.1:6379',
      keyPrefix: 'urs:',
      scoreHistoryCycles: 10,
    });
    expect(redisConfig({ URS_SCORE_HISTORY_CYCLES: '3' }).scoreHistoryCycles).toBe(3);
    expect(() => redisConfig({ URS_SCORE_HISTORY_CYCLES: '0' })).toThrow(
      /URS_SCORE_HISTORY_CYCLES must be ≥ 1/,
    );
    expect(() => redisConfig({ URS_SCORE_HISTORY_CYCLES: '101' })).toThrow(
      /URS_SCORE_HISTORY_CYCLES must be ≤ 100/,
    );
  });
});

describe('topicLayout', () => {
  it("should leave replicas to the broker's default unless told, and refuse 0 naming the variable", () => {
    expect(topicLayout({})).toEqual({ partitions: 6, replicationFactor: -1 });
    expect(topicLayout({ URS_TOPIC_PARTITIONS: '12', URS_TOPIC_REPLICATION_FACTOR: '3' })).toEqual({
      partitions: 12,
      replicationFactor: 3,
    });
    expect(() => topicLayout({ URS_TOPIC_REPLICATION_FACTOR: '0' })).toThrow(/URS_TOPIC_REPLICATION_FACTOR/);
    expect(() => topicLayout({ URS_TOPIC_REPLICATION_FACTOR: '-2' })).toThrow(/URS_TOPIC_REPLICATION_FACTOR/);
  });
});

describe('topicsConfig', () => {
  it('should use the contract names by default', () => {
    expect(topicsConfig({})).toMatchObject({
      tenants: 'urs.tenants',
      vmsRiskScores: 'vms.risk-scores',
      dlq: 'urs.dlq',
    });
  });

  it('should apply the prefix and let one topic be renamed on its own', () => {
    const topics = topicsConfig({ URS_TOPIC_PREFIX: 't1.', URS_TOPIC_DLQ: 'dead' });
    expect(topics.deviceBatches).toBe('t1.urs.device-batches');
    expect(topics.dlq).toBe('dead');
  });

  it('topicsConfig should refuse a topic name Kafka would refuse, naming the variable that gave it and the rule', () => {
    for (const bad of ['staging/tenants', 'my tenants', '.', '..', 'ü', 'x'.repeat(250)]) {
      expect(() => topicsConfig({ URS_TOPIC_TENANTS: bad })).toThrow(
        /^URS_TOPIC_TENANTS must be a topic name Kafka accepts: 1–249 ASCII letters, digits, dots, underscores or dashes, not "\." or "\.\." \(got ".*"\)$/,
      );
    }
    expect(topicsConfig({ URS_TOPIC_TENANTS: `A_b-9.${'x'.repeat(243)}` }).tenants).toHaveLength(249);
  });

  it('topicsConfig should name URS_TOPIC_PREFIX when the prefix makes a default name Kafka would refuse', () => {
    expect(() => topicsConfig({ URS_TOPIC_PREFIX: 'staging/' })).toThrow(
      /^URS_TOPIC_PREFIX must make topic names Kafka accepts: 1–249 ASCII letters, .* \(got "staging\/urs\.registration"\)$/,
    );
    expect(() => topicsConfig({ URS_TOPIC_PREFIX: 'x'.repeat(240) })).toThrow(/^URS_TOPIC_PREFIX must make/);
    // A topic named on its own takes no prefix: the error is about the first name the prefix still makes.
    expect(() =>
      topicsConfig({ URS_TOPIC_PREFIX: 'staging/', URS_TOPIC_REGISTRATION: 'registration' }),
    ).toThrow(/\(got "staging\/urs\.tenants"\)$/);
  });
});

describe('secretKeyConfig', () => {
  it('should require a 32-byte base64 key', () => {
    expect(() => secretKeyConfig({ URS_SECRET_KEY: randomBytes(16).toString('base64') })).toThrow(
      /URS_SECRET_KEY must be 32 bytes/,
    );
  });

  it("should refuse the example Secret's placeholder, naming the variable and not the value", () => {
    const placeholder = 'REPLACE-WITH-openssl-rand-base64-32';
    const refusal = (): unknown => secretKeyConfig({ URS_SECRET_KEY: placeholder });
    expect(refusal).toThrow(/^URS_SECRET_KEY holds a placeholder/);
    expect(refusal).not.toThrow(placeholder);
    // Also one of the length a real key has, which would otherwise decode as 32 bytes.
    const keyLong = `REPLACE${'A'.repeat(36)}=`;
    expect(Buffer.from(keyLong, 'base64').length).toBe(32);
    expect(() => secretKeyConfig({ URS_SECRET_KEY: keyLong })).toThrow(/^URS_SECRET_KEY holds a placeholder/);
    expect(() =>
      secretKeyConfig({
        URS_SECRET_KEY: randomBytes(32).toString('base64'),
        URS_SECRET_KEY_ID: 'k2',
        URS_SECRET_KEYS_PREVIOUS: `k1:${keyLong}`,
      }),
    ).toThrow(/^URS_SECRET_KEYS_PREVIOUS holds a placeholder/);
  });

  it('should keep previous keys for decryption', () => {
    const active = randomBytes(32).toString('base64');
    const old = randomBytes(32).toString('base64');
    const config = secretKeyConfig({
      URS_SECRET_KEY: active,
      URS_SECRET_KEY_ID: 'k2',
      URS_SECRET_KEYS_PREVIOUS: `k1:${old}`,
    });
    expect(config.activeKeyId).toBe('k2');
    expect([...config.keys.keys()]).toEqual(['k2', 'k1']);
  });

  it('should refuse a previous key under an id already given, the active one included', () => {
    const key = () => randomBytes(32).toString('base64');
    // A rotation that forgot URS_SECRET_KEY_ID: the old key listed under the active id k1.
    expect(() => secretKeyConfig({ URS_SECRET_KEY: key(), URS_SECRET_KEYS_PREVIOUS: `k1:${key()}` })).toThrow(
      'URS_SECRET_KEYS_PREVIOUS repeats key id k1',
    );
    expect(() =>
      secretKeyConfig({
        URS_SECRET_KEY: key(),
        URS_SECRET_KEY_ID: 'k3',
        URS_SECRET_KEYS_PREVIOUS: `k1:${key()},k1:${key()}`,
      }),
    ).toThrow('repeats key id k1');
  });
});

describe('consumerSettings', () => {
  it("consumerSettings should default to the service's group under the topic prefix, a 30 s session and the service's concurrency", () => {
    expect(consumerSettings({ URS_TOPIC_PREFIX: 't1.' }, 'scorer', 6)).toEqual({
      groupId: 't1.urs.scorer',
      sessionTimeoutMs: 30_000,
      partitionsConcurrency: 6,
    });
    expect(consumerSettings({}, 'vuln-fetcher', 16).partitionsConcurrency).toBe(16);
  });

  it('consumerSettings should read the group, the session timeout and the concurrency', () => {
    expect(
      consumerSettings(
        {
          URS_CONSUMER_GROUP: 'g',
          URS_CONSUMER_SESSION_TIMEOUT_MS: '6000',
          URS_PARTITIONS_CONCURRENCY: '3',
        },
        'publisher',
        6,
      ),
    ).toEqual({ groupId: 'g', sessionTimeoutMs: 6_000, partitionsConcurrency: 3 });
  });

  it('consumerSettings should refuse a session under 6 s (the broker’s default minimum) and a concurrency outside 1–100, naming the variable', () => {
    expect(() => consumerSettings({ URS_CONSUMER_SESSION_TIMEOUT_MS: '5999' }, 'scorer', 6)).toThrow(
      /^URS_CONSUMER_SESSION_TIMEOUT_MS must be ≥ 6000: .*group\.min\.session\.timeout\.ms.*\(got 5999\)$/,
    );
    expect(() => consumerSettings({ URS_PARTITIONS_CONCURRENCY: '101' }, 'scorer', 6)).toThrow(
      /URS_PARTITIONS_CONCURRENCY/,
    );
    expect(() => consumerSettings({ URS_PARTITIONS_CONCURRENCY: '0' }, 'scorer', 6)).toThrow(
      /URS_PARTITIONS_CONCURRENCY/,
    );
  });

  it('consumerSettings should refuse a session over 30 min (the broker’s default maximum, else INVALID_SESSION_TIMEOUT) naming the variable and the rule', () => {
    expect(
      consumerSettings({ URS_CONSUMER_SESSION_TIMEOUT_MS: '1800000' }, 'scorer', 6).sessionTimeoutMs,
    ).toBe(1_800_000);
    expect(() => consumerSettings({ URS_CONSUMER_SESSION_TIMEOUT_MS: '1800001' }, 'scorer', 6)).toThrow(
      /^URS_CONSUMER_SESSION_TIMEOUT_MS must be ≤ 1800000: .*group\.max\.session\.timeout\.ms.*\(got 1800001\)$/,
    );
  });
});

/** A PEM certificate as far as readPemFile looks: its BEGIN line (the content is the TLS stack's to judge). */
const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'urs-config-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('readPemFile', () => {
  it('readPemFile should return undefined when the variable is unset or blank', () => {
    expect(readPemFile({}, 'URS_DEFENDER_CA_FILE')).toBeUndefined();
    expect(readPemFile({ URS_DEFENDER_CA_FILE: ' ' }, 'URS_DEFENDER_CA_FILE')).toBeUndefined();
  });

  it('readPemFile should return the text of a PEM certificate file', () => {
    const file = join(dir, 'good.pem');
    writeFileSync(file, PEM);
    expect(readPemFile({ URS_DEFENDER_CA_FILE: file }, 'URS_DEFENDER_CA_FILE')).toBe(PEM);
  });

  it('readPemFile should name the variable and the file when the file does not exist', () => {
    const file = join(dir, 'missing.pem');
    expect(() => readPemFile({ URS_DEFENDER_CA_FILE: file }, 'URS_DEFENDER_CA_FILE')).toThrow(
      `URS_DEFENDER_CA_FILE names ${file}, which does not exist`,
    );
  });

  it('readPemFile should name the variable when the file cannot be read (a directory)', () => {
    expect(() => readPemFile({ URS_DEFENDER_CA_FILE: dir }, 'URS_DEFENDER_CA_FILE')).toThrow(
      `URS_DEFENDER_CA_FILE names ${dir}, which is a directory, not a file`,
    );
  });

  it('readPemFile should name the variable when the process may not read the file', () => {
    // The refusal a process that is not root gets (root reads a file whatever its mode).
    const denied = Object.assign(new Error(`EACCES: permission denied, open '${dir}/locked.pem'`), {
      code: 'EACCES',
    });
    const read = jest.spyOn(fs, 'readFileSync').mockImplementation(() => {
      throw denied;
    });
    try {
      const file = join(dir, 'locked.pem');
      expect(() => readPemFile({ URS_DEFENDER_CA_FILE: file }, 'URS_DEFENDER_CA_FILE')).toThrow(
        `URS_DEFENDER_CA_FILE names ${file}, which this process may not read (EACCES)`,
      );
    } finally {
      read.mockRestore();
    }
  });

  it('readPemFile should name the variable when the file holds no PEM certificate', () => {
    const file = join(dir, 'not.pem');
    writeFileSync(file, 'MIIB (a DER certificate in base64, without its BEGIN line)\n');
    expect(() => readPemFile({ URS_DEFENDER_CA_FILE: file }, 'URS_DEFENDER_CA_FILE')).toThrow(
      `URS_DEFENDER_CA_FILE names ${file}, which is not a PEM certificate file (it has no "-----BEGIN CERTIFICATE-----" line)`,
    );
  });

  it('readPemFile should fail with a ConfigError carrying the variable', () => {
    const file = join(dir, 'missing.pem');
    let thrown: unknown;
    try {
      readPemFile({ URS_DEFENDER_CA_FILE: file }, 'URS_DEFENDER_CA_FILE');
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ code: 'CONFIG_INVALID', details: { variable: 'URS_DEFENDER_CA_FILE' } });
  });
});

describe('defenderSettings', () => {
  it('defenderSettings should default to Microsoft quotas, 10 calls in flight, no extra CA and no overrides', () => {
    expect(defenderSettings({})).toEqual({
      defender: {},
      extraCa: undefined,
      maxInFlight: 10,
      quotas: 'microsoft',
      requestTimeoutMs: 30_000,
      tokenRequestTimeoutMs: 60_000,
    });
  });

  it('defenderSettings should refuse an override URL that is not https (client secrets would go in clear), naming the variable', () => {
    for (const variable of ['URS_DEFENDER_AUTHORITY_HOST', 'URS_DEFENDER_API_BASE']) {
      expect(() => defenderSettings({ [variable]: 'http://login.example.com' })).toThrow(
        new RegExp(`^${variable} must be an https:// URL`),
      );
      expect(defenderSettings({ [variable]: 'https://login.example.com' }).defender).toBeDefined();
    }
  });

  it('defenderSettings should read the overrides, the CA file, the call slots and the quota switch', () => {
    const caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, PEM);
    expect(
      defenderSettings({
        URS_DEFENDER_AUTHORITY_HOST: 'https://127.0.0.1:8443',
        URS_DEFENDER_API_BASE: 'https://127.0.0.1:8443',
        URS_DEFENDER_CA_FILE: caFile,
        URS_DEFENDER_MAX_IN_FLIGHT: '4',
        URS_DEFENDER_QUOTAS: 'off',
        URS_DEFENDER_REQUEST_TIMEOUT_MS: '10000',
      }),
    ).toEqual({
      defender: { authorityHost: 'https://127.0.0.1:8443', apiBase: 'https://127.0.0.1:8443' },
      extraCa: PEM,
      maxInFlight: 4,
      quotas: 'off',
      requestTimeoutMs: 10_000,
      tokenRequestTimeoutMs: 60_000,
    });
  });

  it('defenderSettings should read the token scope overrides of the US Government clouds', () => {
    expect(
      defenderSettings({
        URS_DEFENDER_SCOPE_GCC: 'https://api-gcc.securitycenter.microsoft.us/.default',
        URS_DEFENDER_SCOPE_GCC_HIGH: 'https://api.securitycenter.microsoft.us/.default',
        URS_DEFENDER_SCOPE_DOD: ' api://fc780465-2017-40d4-a0c5-307022471b92/.default ',
      }).defender,
    ).toEqual({
      scopes: {
        gcc: 'https://api-gcc.securitycenter.microsoft.us/.default',
        'gcc-high': 'https://api.securitycenter.microsoft.us/.default',
        dod: 'api://fc780465-2017-40d4-a0c5-307022471b92/.default',
      },
    });
    expect(
      defenderSettings({ URS_DEFENDER_SCOPE_DOD: 'https://api-gov.securitycenter.microsoft.us/.default' })
        .defender,
    ).toEqual({ scopes: { dod: 'https://api-gov.securitycenter.microsoft.us/.default' } });
  });

  it.each([
    'https://api-gov.securitycenter.microsoft.us',
    'https://api-gov.securitycenter.microsoft.us/Machine.Read.All',
    '/.default',
    'not a uri/.default',
  ])('defenderSettings should refuse the scope %j naming the variable', (value) => {
    expect(() => defenderSettings({ URS_DEFENDER_SCOPE_GCC_HIGH: value })).toThrow(
      expect.objectContaining({
        details: { variable: 'URS_DEFENDER_SCOPE_GCC_HIGH' },
        message: expect.stringMatching(
          /^URS_DEFENDER_SCOPE_GCC_HIGH must be a resource URI followed by \/\.default/,
        ),
      }),
    );
  });

  it.each(['https://api.security.microsoft.com/.default', 'https://API.Security.Microsoft.com//.default'])(
    'defenderSettings should refuse Microsoft 365 Defender’s scope %j, naming the variable and the rule',
    (value) => {
      expect(() => defenderSettings({ URS_DEFENDER_SCOPE_GCC: value })).toThrow(
        expect.objectContaining({
          details: { variable: 'URS_DEFENDER_SCOPE_GCC' },
          message: expect.stringMatching(
            /^URS_DEFENDER_SCOPE_GCC must name the Defender for Endpoint API's resource \(WindowsDefenderATP\), not https:\/\/api\.security\.microsoft\.com/,
          ),
        }),
      );
    },
  );

  it('defenderSettings should refuse a URS_DEFENDER_CA_FILE that is missing or holds no PEM, naming it', () => {
    expect(() => defenderSettings({ URS_DEFENDER_CA_FILE: join(dir, 'absent.pem') })).toThrow(
      /^URS_DEFENDER_CA_FILE names .*absent\.pem, which does not exist$/,
    );
    const file = join(dir, 'text.pem');
    writeFileSync(file, 'not a certificate');
    expect(() => defenderSettings({ URS_DEFENDER_CA_FILE: file })).toThrow(
      /^URS_DEFENDER_CA_FILE names .*text\.pem, which is not a PEM certificate file/,
    );
  });

  it('defenderSettings should refuse call slots outside 1–100 and an unknown quota switch, naming the variable', () => {
    expect(() => defenderSettings({ URS_DEFENDER_MAX_IN_FLIGHT: '101' })).toThrow(
      /URS_DEFENDER_MAX_IN_FLIGHT/,
    );
    expect(() => defenderSettings({ URS_DEFENDER_MAX_IN_FLIGHT: '0' })).toThrow(/URS_DEFENDER_MAX_IN_FLIGHT/);
    expect(() => defenderSettings({ URS_DEFENDER_QUOTAS: 'none' })).toThrow(/URS_DEFENDER_QUOTAS/);
  });

  it('defenderSettings should read the token request timeout, a minute by default, and refuse one outside 5000–300000 ms naming the variable', () => {
    expect(defenderSettings({}).tokenRequestTimeoutMs).toBe(60_000);
    expect(defenderSettings({ URS_TOKEN_REQUEST_TIMEOUT_MS: '20000' }).tokenRequestTimeoutMs).toBe(20_000);
    expect(() => defenderSettings({ URS_TOKEN_REQUEST_TIMEOUT_MS: '1000' })).toThrow(
      /URS_TOKEN_REQUEST_TIMEOUT_MS must be ≥ 5000/,
    );
    expect(() => defenderSettings({ URS_TOKEN_REQUEST_TIMEOUT_MS: '600000' })).toThrow(
      /URS_TOKEN_REQUEST_TIMEOUT_MS must be ≤ 300000/,
    );
  });

  it('defenderSettings should refuse a request timeout outside 1000–30000 ms, naming the variable', () => {
    expect(() => defenderSettings({ URS_DEFENDER_REQUEST_TIMEOUT_MS: '60000' })).toThrow(
      /URS_DEFENDER_REQUEST_TIMEOUT_MS/,
    );
    expect(() => defenderSettings({ URS_DEFENDER_REQUEST_TIMEOUT_MS: '500' })).toThrow(
      /URS_DEFENDER_REQUEST_TIMEOUT_MS/,
    );
  });
});

describe('serviceConfig', () => {
  it('should reject an unknown log level naming the variable', () => {
    expect(() => serviceConfig({ URS_LOG_LEVEL: 'loud' }, 'poller')).toThrow(/URS_LOG_LEVEL must be one of/);
  });

  it('should give each of the five stages a metrics port of its own, and other names a free port', () => {
    const stages = ['registrar', 'poller', 'vuln-fetcher', 'scorer', 'publisher'];
    const ports = stages.map((stage) => serviceConfig({}, stage).metricsPort);
    expect(new Set(ports).size).toBe(stages.length);
    expect(ports.every((port) => port > 1024)).toBe(true);
    expect(serviceConfig({}, 'urs-cli').metricsPort).toBe(0);
    expect(serviceConfig({ URS_METRICS_PORT: '9200' }, 'poller').metricsPort).toBe(9200);
  });

  it('should give a graceful stop 15 s unless told, and refuse under 2 s naming the variable and the rule', () => {
    expect(serviceConfig({}, 'poller').shutdownTimeoutMs).toBe(15_000);
    expect(serviceConfig({ URS_SHUTDOWN_TIMEOUT_MS: '2000' }, 'poller').shutdownTimeoutMs).toBe(2_000);
    expect(() => serviceConfig({ URS_SHUTDOWN_TIMEOUT_MS: '1999' }, 'poller')).toThrow(
      /^URS_SHUTDOWN_TIMEOUT_MS must be ≥ 2000: .*closing.*\(got 1999\)$/,
    );
    expect(() => serviceConfig({ URS_SHUTDOWN_TIMEOUT_MS: 'soon' }, 'poller')).toThrow(
      /^URS_SHUTDOWN_TIMEOUT_MS must be a whole number/,
    );
  });
});

import { DEFAULT_RUNNER_RETRY, notJsonReason, redactPayload, toDeadLetter, type Publisher } from '@urs/bus';
import type { DeadLetter } from '@urs/contracts';
import { namesSecret, silentLogger } from '@urs/logging';
import { UrsError } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { createMessageProcessor } from '../src/handle';
import { heldMessages, messageWork } from './work';

describe('redactPayload', () => {
  it('should remove client secrets from a JSON payload', () => {
    const text = JSON.stringify({
      tenants: [{ tenantId: 't', defender: { clientSecret: 'Zx9~real-secret' } }],
    });
    const redacted = redactPayload(text);
    expect(redacted).not.toContain('Zx9~real-secret');
    expect(JSON.parse(redacted).tenants[0].tenantId).toBe('t');
  });

  it('should withhold text that is not JSON when it names a secret, and keep text that does not', () => {
    const cases = [
      '{"tenants":[{"defender":{"clientSecret": "Zx9~real\\"secret", "clientId": "c"}',
      '{"tenants":[{"defender":{"clientSecret":"Zx9~real-secret',
      "{'tenants':[{'defender':{'clientSecret':'Zx9~real-secret'}}]}",
      '{"tenants":[{"defender":{"clientSecret":Zx9~real-secret}}]}',
      '{"tenants":[{"defender":{"client\\u0053ecret":"Zx9~real-secret"}}],}',
    ];
    for (const text of cases) {
      const redacted = redactPayload(text);
      expect(redacted).not.toContain('Zx9~real');
      expect(redacted).toBe(
        `[withheld: ${Buffer.byteLength(text)} bytes that are not a JSON object and may hold a secret]`,
      );
    }
    expect(redactPayload('not json')).toBe('not json');
    expect(redactPayload('{"devices":[1,2')).toBe('{"devices":[1,2');
  });

  it('should withhold a JSON string holding a push, and redact a string value that names a secret', () => {
    const push = JSON.stringify({
      tenants: [{ tenantId: 't', defender: { clientSecret: 'Zx9~real-secret' } }],
    });
    expect(redactPayload(JSON.stringify(push))).toMatch(/^\[withheld: \d+ bytes/);
    const nested = redactPayload(JSON.stringify({ note: 'kept', tenants: push }));
    expect(nested).not.toContain('Zx9~real');
    expect(JSON.parse(nested)).toEqual({ note: 'kept', tenants: '[redacted]' });
  });
});

describe('redactPayload and the log agree on what names a secret', () => {
  const secretKeys = ['clientSecret', 'x-api-key', 'sharedKey', 'privateKey', 'sas', 'signature', 'cookie'];
  const keptKeys = ['clientSecretKeyId', 'tokenIssued', 'saslMechanism', 'deviceCount'];

  it.each([...secretKeys, 'credential', 'client_assertion', 'api_key'])(
    'should withhold text cut short whose key %s names a secret, as the log redacts its field',
    (key) => {
      expect(namesSecret(key)).toBe(true);
      const text = `{"${key}":"Zx9~real-secret`;
      expect(redactPayload(text)).toMatch(/^\[withheld: \d+ bytes/);
    },
  );

  it.each(keptKeys)('should keep text cut short whose only key %s names no secret', (key) => {
    expect(namesSecret(key)).toBe(false);
    const text = `{"${key}":"k1`;
    expect(redactPayload(text)).toBe(text);
  });

  it.each(secretKeys)('should redact a string value that names %s', (key) => {
    const payload = JSON.stringify({ note: 'kept', raw: `${key}=Zx9~real-secret` });
    expect(JSON.parse(redactPayload(payload))).toEqual({ note: 'kept', raw: '[redacted]' });
  });
});

describe('redactPayload of device data in text', () => {
  // Words that contain what a key naming a secret would (`sas`, `sig`, `credential`), not followed by a value.
  const kept = [
    'KANSAS-WS-01',
    'arkansas.contoso.com',
    'SASHA-LAPTOP',
    'sig-lab-01',
    'Credential Guard',
    'Windows Defender Credential Guard is running',
    'sig-lab-01.contoso.com:443',
    'the token endpoint answered 503',
  ];
  // Text that carries a secret under a key, in a header or a URL.
  const withheld = [
    'https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig=Zx9realsecret%3D',
    'sas=Zx9realsecret',
    'client_secret=Zx9realsecret&grant_type=client_credentials',
    '{"password":"Zx9realsecret"',
    '{\\"password\\":\\"Zx9realsecret\\"}',
    "{ clientSecret: 'Zx9realsecret' }",
    "'credential': 'Zx9realsecret'",
    'password: Zx9realsecret',
    'Authorization: Basic Zx9realsecret',
    'Bearer Zx9realsecretZx9realsecret',
    'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.Zx9realsecret',
    'redis://:Zx9realsecret@cache:6379',
  ];

  it.each(kept)('should keep %s, as text and as a string value', (text) => {
    expect(redactPayload(text)).toBe(text);
    const payload = JSON.stringify({ computerDnsName: text });
    expect(JSON.parse(redactPayload(payload))).toEqual({ computerDnsName: text });
  });

  it.each(withheld)('should withhold %s as text and redact its secret as a string value', (text) => {
    expect(redactPayload(text)).toMatch(/^\[withheld: \d+ bytes/);
    const redacted = redactPayload(JSON.stringify({ note: 'kept', raw: text }));
    expect(redacted).not.toContain('Zx9realsecret');
    expect(JSON.parse(redacted)).toMatchObject({ note: 'kept' });
  });
});

describe('toDeadLetter of a payload nested too deep', () => {
  it('should withhold the payload, whichever redaction the topic has, and keep the reason', () => {
    const value = deeplyNested(20_000);
    const message = {
      service: 's',
      topic: 't',
      partition: 0,
      offset: '1',
      key: null,
      value: Buffer.from(value),
    };
    const error = new UrsError('CONTRACT_INVALID', 'not a push');
    const withheld = `[withheld: ${Buffer.byteLength(value)} bytes that could not be read field by field: nested too deep]`;
    for (const redactor of [undefined, (text: string) => JSON.stringify(JSON.parse(text))]) {
      const letter = toDeadLetter(message, error, redactor ? { redactPayload: redactor } : {});
      expect(letter.payload).toBe(withheld);
      expect(letter.error).toEqual({ code: 'CONTRACT_INVALID', message: 'not a push' });
    }
  });
});

describe('notJsonReason', () => {
  it('should keep the position V8 gives, and never the text it quotes', () => {
    const reasonOf = (text: string): string => {
      try {
        JSON.parse(text);
      } catch (error) {
        return notJsonReason(error);
      }
      throw new Error('parsed');
    };
    expect(reasonOf('{"clientSecret":"Zx9~real-secret')).toMatch(
      /^the value is not JSON \(at position \d+\)$/,
    );
    const unexpected = reasonOf('{"clientSecret":Zx9~real-secret}');
    expect(unexpected).not.toContain('Zx9');
    expect(unexpected).toMatch(/^the value is not JSON/);
    expect(reasonOf('')).toBe('the value is not JSON: Unexpected end of JSON input');
  });
});

describe('toDeadLetter', () => {
  it('should carry the source position, the error code and the reason', () => {
    const letter = toDeadLetter(
      {
        service: 'scorer',
        topic: 'urs.devices-enriched',
        partition: 2,
        offset: '41',
        key: Buffer.from('acme'),
        value: Buffer.from('not json'),
      },
      Object.assign(new Error('the value is not JSON'), { code: 'MESSAGE_NOT_JSON', canRetry: false }),
      { now: new Date('2026-01-01T00:00:00Z') },
    );
    expect(letter).toEqual({
      schemaVersion: 1,
      service: 'scorer',
      sourceTopic: 'urs.devices-enriched',
      partition: 2,
      offset: '41',
      key: 'acme',
      error: { code: 'MESSAGE_NOT_JSON', message: 'the value is not JSON' },
      payload: 'not json',
      failedAt: '2026-01-01T00:00:00.000Z',
    });
  });

  it('should redact a secret its reason quotes: JSON inside a JSON string, a token request, a bearer token', () => {
    const quoted = JSON.stringify(JSON.stringify({ clientId: 'c1', clientSecret: 'Zx9~real-secret' }));
    const reason =
      `handler failed on ${quoted}; token request client_secret=Zx9~real-secret&grant_type=client_credentials ` +
      'answered 401 to Authorization: Bearer Zx9~real-bearer-token-value';
    const message = { service: 's', topic: 't', partition: 0, offset: '1', key: null, value: null };
    const letter = toDeadLetter(message, new UrsError('HANDLER_FAILED', reason));
    expect(letter.error.message).not.toContain('Zx9');
    expect(letter.error.message).toContain('grant_type=client_credentials');
  });

  it('should cut a reason of a million characters, saying how long it was, so that the letter stays small', () => {
    const reason = `registration refused: ${'defender.unknownField is not a known field; '.repeat(25_000)}`;
    const message = { service: 's', topic: 't', partition: 0, offset: '1', key: null, value: null };
    const letter = toDeadLetter(message, new UrsError('REGISTRATION_INVALID', reason));
    expect(letter.error.message.length).toBeLessThanOrEqual(17 * 1024);
    expect(letter.error.message).toMatch(
      /^registration refused: defender\.unknownField is not a known field; /,
    );
    expect(letter.error.message).toMatch(new RegExp(`\\(cut: ${reason.length} characters in all\\)$`));
    // A short reason stays whole.
    expect(toDeadLetter(message, new UrsError('X', 'short')).error.message).toBe('short');
  });
});

/** A JSON object whose `x` nests `depth` arrays: a few KB that no recursive walk gets to the bottom of. */
const deeplyNested = (depth: number): string =>
  `{"schemaVersion":1,"pwd":"Zz77Q~abc","x":${'['.repeat(depth)}${']'.repeat(depth)}}`;

/**
 * A processor of `topics` (the registration push's contract, which every test message fails; each topic's
 * extra settings, a redaction of its own) whose dead letters are kept in `sent`.
 */
function processorOf(topics: Record<string, object>) {
  const sent: DeadLetter[] = [];
  const publisher = {
    send: async (_topic: string, _contract: string, messages: { value: unknown }[]) => {
      sent.push(...messages.map((message) => message.value as DeadLetter));
    },
  } as unknown as Publisher;
  const metrics = new Registry({ processMetrics: false });
  const settle = createMessageProcessor({
    service: 'test',
    subscriptions: new Map(
      Object.entries(topics).map(([topic, extra]) => [
        topic,
        { topic, contract: 'urs/registration-push' as const, handler: async () => undefined, ...extra },
      ]),
    ),
    publisher,
    dlqTopic: 'dlq',
    log: silentLogger,
    retry: DEFAULT_RUNNER_RETRY,
    held: heldMessages(),
    handled: metrics.counter('handled', 'handled'),
    seconds: metrics.histogram('seconds', 'seconds'),
  });
  return { settle, sent };
}

describe('createMessageProcessor', () => {
  it('should dead-letter a message nested too deep to be redacted, its payload withheld and its reason kept', async () => {
    const { settle, sent } = processorOf({ t: {} });
    const value = deeplyNested(20_000);
    expect(await settle(messageWork({ topic: 't', offset: '7', value }))).toBe(true);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({
      sourceTopic: 't',
      offset: '7',
      error: { code: 'CONTRACT_INVALID' },
      payload: `[withheld: ${Buffer.byteLength(value)} bytes that could not be read field by field: nested too deep]`,
    });
  });

  it("should dead-letter a message through its subscription's own payload redaction", async () => {
    const { settle, sent } = processorOf({
      own: { redactPayload: () => '{"kept":"only this"}' },
      default: {},
    });
    const value = JSON.stringify({ mode: 'FULL', pwd: 'Zz77Q~abc' });
    const work = (topic: string) => messageWork({ topic, offset: '3', value });
    expect(await settle(work('own'))).toBe(true);
    expect(await settle(work('default'))).toBe(true);
    expect(sent.map((letter) => [letter.error.code, letter.payload])).toEqual([
      ['CONTRACT_INVALID', '{"kept":"only this"}'],
      ['CONTRACT_INVALID', redactPayload(value)],
    ]);
  });
});

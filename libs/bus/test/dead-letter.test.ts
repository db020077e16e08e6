import { DEFAULT_RUNNER_RETRY, notJsonReason, redactPayload, toDeadLetter, type Publisher } from '@urs/bus';
import type { DeadLetter } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
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
});

describe('createMessageProcessor', () => {
  it("should dead-letter a message through its subscription's own payload redaction", async () => {
    const sent: DeadLetter[] = [];
    const publisher = {
      send: async (_topic: string, _contract: string, messages: { value: unknown }[]) => {
        sent.push(...messages.map((message) => message.value as DeadLetter));
      },
    } as unknown as Publisher;
    const metrics = new Registry({ processMetrics: false });
    const subscription = (topic: string, extra: object = {}) => ({
      topic,
      contract: 'urs/registration-push' as const,
      handler: async () => undefined,
      ...extra,
    });
    const settle = createMessageProcessor({
      service: 'test',
      subscriptions: new Map([
        ['own', subscription('own', { redactPayload: () => '{"kept":"only this"}' })],
        ['default', subscription('default')],
      ]),
      publisher,
      dlqTopic: 'dlq',
      log: silentLogger,
      retry: DEFAULT_RUNNER_RETRY,
      held: heldMessages(),
      handled: metrics.counter('handled', 'handled'),
      seconds: metrics.histogram('seconds', 'seconds'),
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

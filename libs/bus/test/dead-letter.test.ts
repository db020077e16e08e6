import { redactPayload, toDeadLetter } from '@urs/bus';

describe('redactPayload', () => {
  it('should remove client secrets from a JSON payload', () => {
    const text = JSON.stringify({
      tenants: [{ tenantId: 't', defender: { clientSecret: 'Zx9~real-secret' } }],
    });
    const redacted = redactPayload(text);
    expect(redacted).not.toContain('Zx9~real-secret');
    expect(JSON.parse(redacted).tenants[0].tenantId).toBe('t');
  });

  it('should remove client secrets from text that is not valid JSON', () => {
    const text = '{"tenants":[{"defender":{"clientSecret": "Zx9~real\\"secret", "clientId": "c"}';
    const redacted = redactPayload(text);
    expect(redacted).not.toContain('Zx9~real');
    expect(redacted).toContain('"clientId": "c"');
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
      new Date('2026-01-01T00:00:00Z'),
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

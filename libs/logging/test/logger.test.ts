import { PassThrough } from 'node:stream';
import { createLogger, namesSecret, redact, redactText } from '@urs/logging';

function capture(): { stream: PassThrough; lines: () => Record<string, unknown>[] } {
  const stream = new PassThrough();
  const chunks: string[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk.toString('utf8')));
  return {
    stream,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

describe('createLogger', () => {
  it('should write one JSON line per call with service, level, time and fields', async () => {
    const out = capture();
    const logger = createLogger({ service: 'poller', stream: out.stream });
    logger.child({ tenantId: 't1' }).info('cycle started', { cycleId: 'c1' });
    await new Promise((resolve) => setImmediate(resolve));
    const [line] = out.lines();
    expect(line).toMatchObject({ level: 'info', service: 'poller', tenantId: 't1', cycleId: 'c1' });
    expect(line?.message).toBe('cycle started');
    expect(typeof line?.time).toBe('string');
  });

  it('should never write a client secret, however deeply it is nested', async () => {
    const out = capture();
    const logger = createLogger({ service: 'registrar', stream: out.stream });
    logger.warn('registration rejected', {
      tenant: { defender: { clientSecret: 'sup3r-s3cret-value', clientId: 'abc' } },
      headers: { Authorization: 'Bearer abc.def' },
    });
    await new Promise((resolve) => setImmediate(resolve));
    const text = JSON.stringify(out.lines());
    expect(text).not.toContain('sup3r-s3cret-value');
    expect(text).not.toContain('abc.def');
    expect(text).toContain('"clientId":"abc"');
  });

  it('should never write a client secret quoted inside a text field or an error, as a handler retried says why', async () => {
    const out = capture();
    const logger = createLogger({ service: 'registrar', stream: out.stream });
    const quoted = 'cannot register {"azureTenantId": "t1", "clientSecret": "sup3r-s3cret-\\"value"}';
    logger.warn('handler failed, retrying', { reason: quoted, error: new Error(quoted) });
    await new Promise((resolve) => setImmediate(resolve));
    const [line] = out.lines();
    expect(JSON.stringify(line)).not.toContain('sup3r');
    expect(line?.reason).toBe('cannot register {"azureTenantId": "t1", "clientSecret": "[redacted]"}');
    expect(line?.error).toMatchObject({ message: line?.reason });
  });

  it("should write a field named message as reason, never into the line's own message", async () => {
    const out = capture();
    const logger = createLogger({ service: 'vuln-fetcher', stream: out.stream });
    logger.warn('device vulnerabilities not fetched', { code: 'STOPPED', message: 'Stopped while waiting' });
    logger.warn('call failed', { reason: 'quota', message: 'the API answered 429' });
    logger.child({ message: 'from the child' }).info('cycle started');
    await new Promise((resolve) => setImmediate(resolve));
    const lines = out.lines();
    expect(lines.map((line) => line.message)).toEqual([
      'device vulnerabilities not fetched',
      'call failed',
      'cycle started',
    ]);
    expect(lines[0]).toMatchObject({ code: 'STOPPED', reason: 'Stopped while waiting' });
    expect(lines[1]).toMatchObject({ reason: 'quota', detail: 'the API answered 429' });
    expect(lines[2]).toMatchObject({ reason: 'from the child' });
  });

  it('should drop lines below the configured level', async () => {
    const out = capture();
    const logger = createLogger({ service: 's', level: 'warn', stream: out.stream });
    logger.info('quiet');
    logger.error('loud');
    await new Promise((resolve) => setImmediate(resolve));
    expect(out.lines().map((line) => line.message)).toEqual(['loud']);
  });
});

describe('redact', () => {
  it('should flatten errors to name, code and message', () => {
    const error = Object.assign(new Error('boom'), { code: 'X', response: { body: 'secret=1' } });
    expect(redact({ err: error })).toEqual({ err: { name: 'Error', code: 'X', message: 'boom' } });
  });

  it('should survive circular structures', () => {
    const a: Record<string, unknown> = { name: 'a' };
    a.self = a;
    expect(redact(a)).toEqual({ name: 'a', self: '[circular]' });
  });

  it('should redact a key naming a secret however it is spelled, and keep a key naming a fact about one', () => {
    const headers = {
      client_secret: 's1',
      'Client-Secret': 's2',
      clientSecret: 's3',
      'x-ms-token-aad-access-token': 's4',
      'x-ms-token-aad-refresh-token': 's5',
      refreshToken: 's6',
      id_token: 's7',
      client_assertion: 's8',
      'Proxy-Authorization': 's9',
      Cookie: 's10',
      apiTokens: ['s11'],
      'x-api-key': 's12',
    };
    const kept = {
      secretName: 'kv-name',
      clientSecretKeyId: 'k1',
      clientSecretSet: true,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      tokenIssued: true,
      'x-ms-client-request-id': 'r1',
    };
    const redacted = redact({ ...headers, ...kept }) as Record<string, unknown>;
    for (const key of Object.keys(headers)) expect([key, redacted[key]]).toEqual([key, '[redacted]']);
    expect(redacted).toMatchObject(kept);
  });
});

/** Keys whose value is a secret however they are spelled, and keys that only say something about one. */
const SECRET_KEYS = [
  'clientSecret',
  'client_secret',
  'Client-Secret',
  'password',
  'passwd',
  'apiKey',
  'api_key',
  'x-api-key',
  'sharedKey',
  'SharedAccessKey',
  'accountKey',
  'privateKey',
  'private_key',
  'signingKey',
  'sas',
  'sasToken',
  'sasUrl',
  'blobSas',
  'sig',
  'signature',
  'cookie',
  'Set-Cookie',
  'credential',
  'credentials',
  'clientCredential',
  'client_assertion',
  'authorization',
  'Proxy-Authorization',
  'bearer',
  'accessToken',
  'refresh_token',
  'x-ms-token-aad-access-token',
  'apiTokens',
  'tokenValue',
  'ciphertext',
];
const NOT_SECRET_KEYS = [
  'tenantId',
  'clientId',
  'secretName',
  'clientSecretKeyId',
  'clientSecretSet',
  'client_assertion_type',
  'secretExpiresAt',
  'credentialType',
  'privateKeyId',
  'signatureVersion',
  'tokenIssued',
  'tokenType',
  'token_type',
  'tokenEndpoint',
  'saslMechanism',
  'disasterRecovery',
  'publicKey',
  'keyId',
  'signal',
  'message',
];

describe('namesSecret', () => {
  it.each(SECRET_KEYS)('should name %s a secret', (key) => {
    expect(namesSecret(key)).toBe(true);
  });

  it.each(NOT_SECRET_KEYS)('should not name %s a secret', (key) => {
    expect(namesSecret(key)).toBe(false);
  });
});

describe('redactText', () => {
  it('should redact a secret field of JSON quoted inside a string, at any depth of escaping', () => {
    const inner = JSON.stringify({ clientId: 'c1', clientSecret: 'Sup3r"s3cret\\' });
    const once = JSON.stringify({ reason: `cannot register ${inner}` });
    const twice = JSON.stringify({ payload: once });
    for (const text of [inner, once, twice]) {
      const redacted = redactText(text);
      expect(redacted).not.toMatch(/Sup3r|s3cret/);
      expect(redacted).toContain('c1');
    }
    expect(JSON.parse(JSON.parse(redactText(twice)).payload)).toEqual({
      reason: 'cannot register {"clientId":"c1","clientSecret":"[redacted]"}',
    });
    expect(redactText('bad value {\\"password\\": \\"hunter2')).toBe(
      'bad value {\\"password\\": \\"[redacted]',
    );
  });

  it.each([
    [
      'a number',
      '{"client_secret": 12345678, "clientId": "c1"}',
      '{"client_secret": "[redacted]", "clientId": "c1"}',
    ],
    [
      'an array',
      '{"clientSecret":["abc],x"],"clientId":"c1"}',
      '{"clientSecret":"[redacted]","clientId":"c1"}',
    ],
    ['an object', '{"secret":{"value":"abc}"},"clientId":"c1"}', '{"secret":"[redacted]","clientId":"c1"}'],
    [
      'a JSON string holding an object',
      '{\\"secret\\":{\\"value\\":\\"abc\\"},\\"id\\":1}',
      '{\\"secret\\":\\"[redacted]\\",\\"id\\":1}',
    ],
  ])('should redact the value of a secret field when it is %s, not a string', (_kind, text, redacted) => {
    expect(redactText(text)).toBe(redacted);
  });

  it('should redact the secret fields of an object as util.inspect writes it', () => {
    expect(redactText("failed for { clientId: 'c1', clientSecret: 'abc123', tries: 3 }")).toBe(
      "failed for { clientId: 'c1', clientSecret: '[redacted]', tries: 3 }",
    );
    expect(redactText('{ password: "it\'s-me", pin: 1 }')).toBe('{ password: "[redacted]", pin: 1 }');
    expect(redactText("{ apiKeys: [ 'k1', 'k2' ], id: 7 }")).toBe("{ apiKeys: '[redacted]', id: 7 }");
    expect(redactText('{ client_secret: 12345678 }')).toBe("{ client_secret: '[redacted]' }");
    // Prose with a colon is no object.
    expect(redactText('secret: rotate it yearly')).toBe('secret: rotate it yearly');
  });

  it("should redact the password of a URL's user information", () => {
    expect(redactText('connect to redis://:supersecret@redis:6379 failed')).toBe(
      'connect to redis://:[redacted]@redis:6379 failed',
    );
    expect(redactText('amqp://urs:p%40ss:w0rd@mq/vhost')).toBe('amqp://urs:[redacted]@mq/vhost');
    expect(redactText('http://redis:6379/0 and https://example.com:443/a@b')).toBe(
      'http://redis:6379/0 and https://example.com:443/a@b',
    );
  });

  it('should redact the secrets of a form-encoded token request and keep its other fields', () => {
    const body =
      'client_id=c1&client_secret=Sup3r%2Bs3cret&client_assertion=eyJx.eyJy.zz&password=hunter2&grant_type=client_credentials';
    expect(redactText(`token request failed: ${body}`)).toBe(
      'token request failed: client_id=c1&client_secret=[redacted]&client_assertion=[redacted]' +
        '&password=[redacted]&grant_type=client_credentials',
    );
    expect(redactText('GET /cb?code=1&refresh_token=r3fr3sh HTTP/1.1')).toBe(
      'GET /cb?code=1&refresh_token=[redacted] HTTP/1.1',
    );
  });

  it('should redact bearer tokens, authorization headers and bare JWTs in free text', () => {
    const jwt = 'eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2FwaSJ9.c2lnbmF0dXJlLXBhcnQ';
    expect(redactText(`POST /api\r\nAuthorization: Bearer ${jwt}\r\nHost: x`)).toBe(
      'POST /api\r\nAuthorization: Bearer [redacted]\r\nHost: x',
    );
    expect(redactText('called with Bearer 0123456789abcdef-opaque, denied')).toBe(
      'called with Bearer [redacted], denied',
    );
    expect(redactText('authorization: Basic dXNlcjpwYXNzd29yZA==')).toBe('authorization: Basic [redacted]');
    expect(redactText(`the token ${jwt} has expired`)).toBe('the token [redacted] has expired');
  });

  it('should keep text that only speaks of secrets', () => {
    for (const text of [
      'a valid bearer token is required (Authorization: Bearer <token>)',
      'the stored clientSecret of tenant acme cannot be opened: PUT the clientSecret again',
      '{"secretName": "kv-urs", "clientSecretKeyId": "k1", "tokenIssued": true}',
      'the client_secret field must be set; see https://x.test/?a=1&b=2',
    ]) {
      expect(redactText(text)).toBe(text);
    }
  });

  it('should take text of a megabyte shaped to make a matcher backtrack', () => {
    const mb = 1024 * 1024;
    const inputs = [
      '\\'.repeat(mb),
      '"'.repeat(mb),
      '\\"a\\": '.repeat(mb / 8),
      '"password": "'.repeat(mb / 13),
      '-eyJ'.repeat(mb / 4),
      'eyJ.'.repeat(mb / 4),
      'bearer '.repeat(mb / 7),
      'a'.repeat(mb) + '=',
      'authorization: '.repeat(mb / 15),
      ' '.repeat(mb) + '"a"',
      '"password": ['.repeat(mb / 13),
      '{ secret: ['.repeat(mb / 11),
      `{${' '.repeat(mb)}a`,
      '{a:'.repeat(mb / 3),
      'a://b:'.repeat(mb / 6),
      `a://:${'b'.repeat(mb)}`,
    ];
    for (const text of inputs) expect(redactText(text).length).toBeGreaterThan(0);
    expect(redactText(`{"clientSecret": "${'x'.repeat(mb)}"}`)).toBe('{"clientSecret": "[redacted]"}');
  });
});

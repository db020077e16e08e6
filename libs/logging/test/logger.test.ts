import { PassThrough } from 'node:stream';
import { createLogger, redact } from '@urs/logging';

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
});

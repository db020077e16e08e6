import { ConfigError } from '@urs/config';
import { registrarConfig } from '../src/config';

/** The variables the registrar requires, so each test sets only what it is about. */
const REQUIRED = {
  URS_API_TOKENS: 'token-0123456789abcdef',
  URS_SECRET_KEY: Buffer.alloc(32, 7).toString('base64'),
};

describe('registrarConfig', () => {
  test('registrarConfig should refuse a placeholder token left as an example wrote it, naming the variable and not the token', () => {
    const placeholder = 'REPLACE-WITH-openssl-rand-hex-16';
    const refused = () =>
      registrarConfig({ ...REQUIRED, URS_API_TOKENS: `${REQUIRED.URS_API_TOKENS},${placeholder}` });
    expect(refused).toThrow(ConfigError);
    expect(refused).toThrow(/^URS_API_TOKENS /);
    expect(refused).toThrow(/placeholder/);
    expect(refused).not.toThrow(placeholder);
    expect(refused).not.toThrow(REQUIRED.URS_API_TOKENS);
  });

  test('registrarConfig should take tokens that only contain the word, not start with it', () => {
    const token = `token-REPLACE-${'0'.repeat(16)}`;
    expect(registrarConfig({ ...REQUIRED, URS_API_TOKENS: token }).apiTokens).toEqual([token]);
  });

  test('registrarConfig should refuse a REST port equal to the metrics port, naming URS_HTTP_PORT and the rule', () => {
    const refused = () => registrarConfig({ ...REQUIRED, URS_HTTP_PORT: '9200', URS_METRICS_PORT: '9200' });
    expect(refused).toThrow(ConfigError);
    expect(refused).toThrow(
      /^URS_HTTP_PORT must differ from URS_METRICS_PORT: the REST API and \/healthz, \/readyz, \/metrics each listen on a port of their own \(both 9200\)$/,
    );
  });

  test("registrarConfig should refuse a REST port equal to the registrar's default metrics port when URS_METRICS_PORT is unset", () => {
    expect(() => registrarConfig({ ...REQUIRED, URS_HTTP_PORT: '9101' })).toThrow(
      /^URS_HTTP_PORT must differ from URS_METRICS_PORT: .*\(both 9101\)$/,
    );
  });

  test('registrarConfig should take ports that differ, and 0 for both (each then picks a free one)', () => {
    expect(registrarConfig(REQUIRED).httpPort).toBe(8080);
    expect(registrarConfig({ ...REQUIRED, URS_HTTP_PORT: '9200', URS_METRICS_PORT: '9201' }).httpPort).toBe(
      9200,
    );
    expect(registrarConfig({ ...REQUIRED, URS_HTTP_PORT: '0', URS_METRICS_PORT: '0' }).httpPort).toBe(0);
  });
});

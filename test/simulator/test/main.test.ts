import { parseArgs } from '../src/main';

describe('parseArgs', () => {
  test('parseArgs should read the CA key directory apart from the CA directory, from a flag or the env', () => {
    expect(parseArgs(['--ca-dir', '/sim', '--ca-key-dir', '/sim-key'], {})).toMatchObject({
      caDir: '/sim',
      caKeyDir: '/sim-key',
    });
    expect(parseArgs([], { URS_SIM_CA_DIR: '/sim', URS_SIM_CA_KEY_DIR: '/k' })).toMatchObject({
      caKeyDir: '/k',
    });
    expect(parseArgs(['--ca-dir', '/sim'], {})).toMatchObject({ caKeyDir: '/sim' });
  });

  test('parseArgs should apply defaults and read repeatable tenants from flags and env', () => {
    const options = parseArgs(
      ['--tenant', 't1:c1:s1:10', '--tenant=t2:c2:s2:0', '--latency', '20:5', '--quotas', 'off'],
      {
        URS_SIM_TENANTS: 't0:c0:s0:3',
        URS_SIM_PORT: '9443',
      },
    );
    expect(options).toMatchObject({
      port: 9443,
      host: '127.0.0.1',
      caDir: '.sim',
      caKeyDir: '.sim',
      seed: 1,
      tokenLifetimeSec: 3599,
      quotas: false,
      latency: { meanMs: 20, jitterMs: 5 },
    });
    expect(options.publicUrl).toBeUndefined();
    expect(parseArgs(['--public-url', 'https://sim:8443'], {}).publicUrl).toBe('https://sim:8443');
    expect(parseArgs([], { URS_SIM_PUBLIC_URL: 'https://sim:9443' }).publicUrl).toBe('https://sim:9443');
    expect(options.tenants.map((t) => [t.azureTenantId, t.apps[0]?.clientId, t.fleet?.size])).toEqual([
      ['t0', 'c0', 3],
      ['t1', 'c1', 10],
      ['t2', 'c2', 0],
    ]);
  });

  test('parseArgs should name the bad option without echoing a tenant secret', () => {
    expect(() => parseArgs(['--port', 'x'], {})).toThrow("--port must be an integer >= 0, got 'x'");
    expect(() => parseArgs(['--bogus', '1'], {})).toThrow('unknown option --bogus');
    let message = '';
    try {
      parseArgs(['--tenant', 't:c:TopSecretValue'], {});
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain('got 3 fields');
    expect(message).not.toContain('TopSecretValue');
  });
});

import { execFile } from 'node:child_process';
import { ClientSecretCredential } from '@azure/identity';
import { startSimulator, type Simulator } from '@urs/simulator';
import {
  CLIENT_ID,
  decodeJwt,
  type HttpReply,
  MDE_SCOPE,
  request,
  SECRET,
  TENANT,
  tokenForm,
} from './helpers';

const EXPIRED_CLIENT = '11111111-aaaa-4bbb-8ccc-000000000001';
const NO_DEFENDER_TENANT = '22222222-aaaa-4bbb-8ccc-000000000002';

describe('Entra ID simulation', () => {
  let sim: Simulator;

  beforeAll(async () => {
    sim = await startSimulator({ tokenLifetimeSec: 120 });
    sim.addTenant({
      azureTenantId: TENANT,
      apps: [
        { clientId: CLIENT_ID, clientSecret: SECRET },
        { clientId: EXPIRED_CLIENT, clientSecret: 'old-secret', secretExpired: true },
      ],
      fleet: { size: 3 },
    });
    sim.addTenant({
      azureTenantId: NO_DEFENDER_TENANT,
      apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
      defenderProvisioned: false,
    });
  }, 30_000);

  afterAll(() => sim.close());

  const token = (fields: Record<string, string>, tenant = TENANT) =>
    request(sim, `/${tenant}/oauth2/v2.0/token`, tokenForm(fields));
  const valid = {
    grant_type: 'client_credentials',
    client_id: CLIENT_ID,
    client_secret: SECRET,
    scope: MDE_SCOPE,
  };

  function expectAadError(reply: HttpReply, status: number, error: string, code: number): void {
    expect(reply.status).toBe(status);
    expect(reply.json.error).toBe(error);
    expect(reply.json.error_codes).toEqual([code]);
    expect(reply.json.error_description).toMatch(
      new RegExp(
        `^AADSTS${code}: .+\\r\\nTrace ID: [0-9a-f-]{36}\\r\\nCorrelation ID: [0-9a-f-]{36}\\r\\nTimestamp: \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ$`,
      ),
    );
    expect(reply.json.trace_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(reply.json.correlation_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(reply.json.timestamp).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/);
    expect(reply.json.error_uri).toBe(`${sim.baseUrl}/error?code=${code}`);
  }

  test('openid-configuration should point every endpoint back at the simulator', async () => {
    const reply = await request(sim, `/${TENANT}/v2.0/.well-known/openid-configuration`);
    expect(reply.status).toBe(200);
    expect(reply.json.token_endpoint).toBe(`${sim.baseUrl}/${TENANT}/oauth2/v2.0/token`);
    expect(reply.json.issuer).toBe(`${sim.baseUrl}/${TENANT}/v2.0`);
    expect(reply.json.authorization_endpoint).toBe(`${sim.baseUrl}/${TENANT}/oauth2/v2.0/authorize`);
    expect(reply.json.jwks_uri).toBe(`${sim.baseUrl}/${TENANT}/discovery/v2.0/keys`);
    const jwks = await request(sim, `/${TENANT}/discovery/v2.0/keys`);
    expect(jwks.json.keys[0]).toMatchObject({ kty: 'RSA', use: 'sig' });
  });

  test('openid-configuration should answer AADSTS90002 for an unknown tenant', async () => {
    const reply = await request(
      sim,
      `/33333333-aaaa-4bbb-8ccc-000000000003/v2.0/.well-known/openid-configuration`,
    );
    expectAadError(reply, 400, 'invalid_tenant', 90002);
  });

  test('token should issue a signed JWT with the tenant, app and roles', async () => {
    const reply = await token(valid);
    expect(reply.status).toBe(200);
    expect(reply.json).toMatchObject({ token_type: 'Bearer', expires_in: 120, ext_expires_in: 120 });
    expect(reply.headers['cache-control']).toContain('no-store');
    const claims = decodeJwt(reply.json.access_token);
    expect(claims).toMatchObject({
      aud: 'https://api.securitycenter.microsoft.com',
      iss: `https://sts.windows.net/${TENANT}/`,
      tid: TENANT,
      appid: CLIENT_ID,
      roles: ['Machine.Read.All', 'Vulnerability.Read.All', 'Alert.Read.All'],
    });
    expect((claims.exp as number) - (claims.iat as number)).toBeGreaterThanOrEqual(120);
    expect((claims.exp as number) - (claims.iat as number)).toBeLessThanOrEqual(121);
  });

  test('token should accept the windowsatpservice scope and the v1 resource form', async () => {
    const v2 = await token({
      ...valid,
      scope: 'https://securitycenter.onmicrosoft.com/windowsatpservice/.default',
    });
    expect(v2.status).toBe(200);
    const v1 = await request(
      sim,
      `/${TENANT}/oauth2/token`,
      tokenForm({
        grant_type: 'client_credentials',
        client_id: CLIENT_ID,
        client_secret: SECRET,
        resource: 'https://api.securitycenter.microsoft.com',
      }),
    );
    expect(v1.status).toBe(200);
    expect(v1.json.expires_in).toBe('120');
  });

  /**
   * A token for the API `audience` (its `.default` scope): issued for it, with no roles, and refused 403
   * Forbidden by the device list. Returns that answer.
   */
  async function machinesWithRolelessToken(audience: string) {
    const reply = await token({ ...valid, scope: `${audience}/.default` });
    expect(reply.status).toBe(200);
    const claims = decodeJwt(reply.json.access_token);
    expect(claims.aud).toBe(audience);
    expect(claims.roles).toBeUndefined();
    const machines = await request(sim, '/api/machines?$top=1', { token: reply.json.access_token });
    expect(machines.status).toBe(403);
    expect(machines.json.error.code).toBe('Forbidden');
    return machines;
  }

  test('token for Microsoft 365 Defender (api.security.microsoft.com) should carry no Defender for Endpoint roles, so the API answers 403', async () => {
    await machinesWithRolelessToken('https://api.security.microsoft.com');
  });

  test('token should accept the WindowsDefenderATP URI of older Microsoft samples (api.securitycenter.windows.com), with its roles', async () => {
    const reply = await request(
      sim,
      `/${TENANT}/oauth2/token`,
      tokenForm({
        grant_type: 'client_credentials',
        client_id: CLIENT_ID,
        client_secret: SECRET,
        resource: 'https://api.securitycenter.windows.com',
      }),
    );
    expect(reply.status).toBe(200);
    const claims = decodeJwt(reply.json.access_token);
    expect(claims.aud).toBe('https://api.securitycenter.windows.com');
    expect(claims.roles).toEqual(expect.arrayContaining(['Machine.Read.All', 'Vulnerability.Read.All']));
    const machines = await request(sim, '/api/machines?$top=1', { token: reply.json.access_token });
    expect(machines.status).toBe(200);
  });

  test('token for another API of the tenant (Microsoft Graph) should be issued without roles, and MDE should refuse it 403, not 401', async () => {
    const machines = await machinesWithRolelessToken('https://graph.microsoft.com');
    expect(machines.json.error.message).toBe(
      'Missing application roles. API required roles: Machine.Read.All,Machine.ReadWrite.All, application roles: .',
    );
  });

  test('token should accept the US Government scopes, and the API the tokens it issues for them', async () => {
    for (const resource of [
      'https://api-gcc.securitycenter.microsoft.us',
      'https://api-gov.securitycenter.microsoft.us',
    ]) {
      const reply = await token({ ...valid, scope: `${resource}/.default` });
      expect(reply.status).toBe(200);
      const machines = await request(sim, '/api/machines?$top=1', { token: reply.json.access_token });
      expect(machines.status).toBe(200);
    }
  });

  test('token should answer AADSTS7000215 for a wrong secret', async () => {
    expectAadError(
      await token({ ...valid, client_secret: 'c2a1f5e0-secret-id-not-value' }),
      401,
      'invalid_client',
      7000215,
    );
  });

  test('token should answer AADSTS7000222 for an expired secret', async () => {
    expectAadError(
      await token({ ...valid, client_id: EXPIRED_CLIENT, client_secret: 'old-secret' }),
      401,
      'invalid_client',
      7000222,
    );
  });

  test('token should answer AADSTS700016 for an unknown client id', async () => {
    const reply = await token({ ...valid, client_id: '44444444-aaaa-4bbb-8ccc-000000000004' });
    expectAadError(reply, 400, 'unauthorized_client', 700016);
    expect(reply.json.error_description).toContain(
      "'44444444-aaaa-4bbb-8ccc-000000000004' was not found in the directory",
    );
  });

  test('token should answer AADSTS90002 for an unknown tenant and 900023 for a malformed one', async () => {
    expectAadError(await token(valid, '55555555-aaaa-4bbb-8ccc-000000000005'), 400, 'invalid_tenant', 90002);
    expectAadError(await token(valid, 'not a tenant'), 400, 'invalid_request', 900023);
  });

  test('token should answer AADSTS500011 when Defender is not provisioned or the resource is unknown', async () => {
    expectAadError(await token(valid, NO_DEFENDER_TENANT), 400, 'invalid_resource', 500011);
    expectAadError(
      await token({ ...valid, scope: 'https://graph.example.com/.default' }),
      400,
      'invalid_resource',
      500011,
    );
  });

  test('token should answer invalid_scope for a missing or non-.default scope', async () => {
    const { scope: _scope, ...noScope } = valid;
    expectAadError(await token(noScope), 400, 'invalid_scope', 70011);
    expectAadError(
      await token({ ...valid, scope: 'https://api.securitycenter.microsoft.com/Machine.Read.All' }),
      400,
      'invalid_scope',
      1002012,
    );
  });

  test('token should reject other grant types and a missing secret', async () => {
    expectAadError(await token({ ...valid, grant_type: 'password' }), 400, 'unsupported_grant_type', 70003);
    const { client_secret: _secret, ...noSecret } = valid;
    expectAadError(await token(noSecret), 401, 'invalid_client', 7000218);
  });

  test('ClientSecretCredential should get a token over TLS with the CA passed as tlsOptions', async () => {
    const credential = new ClientSecretCredential(TENANT, CLIENT_ID, SECRET, {
      authorityHost: sim.baseUrl,
      disableInstanceDiscovery: true,
      tlsOptions: { ca: sim.caPem },
    });
    const accessToken = await credential.getToken(MDE_SCOPE);
    expect(decodeJwt(accessToken.token)).toMatchObject({ tid: TENANT, appid: CLIENT_ID });
    expect(accessToken.expiresOnTimestamp).toBeGreaterThan(Date.now() + 100_000);
  });

  test('ClientSecretCredential should surface AADSTS7000215 for a wrong secret', async () => {
    const credential = new ClientSecretCredential(TENANT, CLIENT_ID, 'wrong', {
      authorityHost: sim.baseUrl,
      disableInstanceDiscovery: true,
      tlsOptions: { ca: sim.caPem },
    });
    await expect(credential.getToken(MDE_SCOPE)).rejects.toThrow(/AADSTS7000215/);
  });

  test('ClientSecretCredential should trust the simulator through NODE_EXTRA_CA_CERTS in a child process', async () => {
    const script = `
      const { ClientSecretCredential } = require('@azure/identity');
      new ClientSecretCredential(process.env.T, process.env.C, process.env.S, { authorityHost: process.env.H, disableInstanceDiscovery: true })
        .getToken('${MDE_SCOPE}')
        .then((t) => console.log(JSON.stringify({ ok: true, length: t.token.length })), (e) => console.log(JSON.stringify({ ok: false, message: e.message })));`;
    const output = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        ['-e', script],
        {
          env: {
            ...process.env,
            NODE_EXTRA_CA_CERTS: sim.caFile,
            T: TENANT,
            C: CLIENT_ID,
            S: SECRET,
            H: sim.baseUrl,
          },
          timeout: 30_000,
        },
        (err, stdout) => (err ? reject(err) : resolve(stdout)),
      ),
    );
    expect(JSON.parse(output.trim())).toMatchObject({ ok: true });
  }, 30_000);
});

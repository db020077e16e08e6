import { type Simulator, startSimulator } from '@urs/simulator';
import { DefenderErrorCode, mapAuthError } from '../src';
import { type TestApp, newApp, simClient } from './support';

let sim: Simulator;
let app: TestApp;

beforeAll(async () => {
  sim = await startSimulator({ quotas: false });
  app = newApp();
  sim.addTenant({ azureTenantId: app.azureTenantId, apps: [app], fleet: { size: 3, seed: 9 } });
});

afterAll(async () => {
  await sim.close();
});

describe('createDefenderClient in the US Government clouds', () => {
  it.each(['gcc', 'gcc-high', 'dod'])(
    'checkAccess should sign in with the %s default scope and read the devices',
    async (cloud) => {
      const { client, close } = simClient(sim, { ...app, cloud } as TestApp);
      try {
        const report = await client.checkAccess();
        expect(report).toMatchObject({ ok: true, tokenIssued: true, machinesReadable: true });
        expect((await client.tokenClaims())?.aud).toBe(client.endpoints.scope.replace(/\/\.default$/, ''));
      } finally {
        await close();
      }
    },
  );

  it("checkAccess should ask for a cloud's overridden scope", async () => {
    const scope = 'https://api.securitycenter.microsoft.com/.default';
    const { client, close } = simClient(sim, { ...app, cloud: 'gcc-high' } as TestApp, {
      overrides: { authorityHost: sim.baseUrl, apiBase: sim.baseUrl, scopes: { 'gcc-high': scope } },
    });
    try {
      expect((await client.checkAccess()).ok).toBe(true);
      expect((await client.tokenClaims())?.aud).toBe('https://api.securitycenter.microsoft.com');
    } finally {
      await close();
    }
  });

  it('checkAccess should name the scope, the cloud and the variable to set when Entra knows no such resource', async () => {
    const scope = 'https://api-gov.example.invalid/.default';
    const { client, close } = simClient(sim, { ...app, cloud: 'gcc-high' } as TestApp, {
      overrides: { authorityHost: sim.baseUrl, apiBase: sim.baseUrl, scopes: { 'gcc-high': scope } },
    });
    try {
      const report = await client.checkAccess();
      expect(report).toMatchObject({
        ok: false,
        tokenIssued: false,
        error: { code: DefenderErrorCode.NOT_PROVISIONED },
      });
      expect(report.verdict).toContain(`scope ${scope}`);
      expect(report.verdict).toContain('cloud gcc-high');
      expect(report.verdict).toContain('AADSTS500011');
      expect(report.verdict).toContain('URS_DEFENDER_SCOPE_GCC_HIGH');
    } finally {
      await close();
    }
  });
});

describe('mapAuthError on AADSTS500011', () => {
  const entraAnswer = {
    name: 'AuthenticationError',
    statusCode: 400,
    errorResponse: {
      error: 'invalid_resource',
      errorDescription:
        'AADSTS500011: The resource principal named https://api-gcc.securitycenter.microsoft.us was not found.',
      errorCodes: [500011],
    },
  };

  it('should say a government default scope may be wrong and name its variable', () => {
    const error = mapAuthError(entraAnswer, app, {
      cloud: 'gcc',
      scope: 'https://api-gcc.securitycenter.microsoft.us/.default',
      scopeOverridden: false,
    });
    expect(error.code).toBe(DefenderErrorCode.NOT_PROVISIONED);
    expect(error.message).toContain('scope https://api-gcc.securitycenter.microsoft.us/.default');
    expect(error.message).toContain('cloud gcc');
    expect(error.message).toContain('Microsoft does not document the gcc scope');
    expect(error.message).toContain('set URS_DEFENDER_SCOPE_GCC ');
    expect(error.details).toMatchObject({
      cloud: 'gcc',
      scope: 'https://api-gcc.securitycenter.microsoft.us/.default',
    });
  });

  it('should keep the commercial message about Defender missing, naming the scope', () => {
    const error = mapAuthError(entraAnswer, app, {
      cloud: 'commercial',
      scope: 'https://api.securitycenter.microsoft.com/.default',
      scopeOverridden: false,
    });
    expect(error.message).toMatch(/^Microsoft Defender for Endpoint is not present in tenant/);
    expect(error.message).toContain(
      'scope https://api.securitycenter.microsoft.com/.default, cloud commercial',
    );
  });
});

import { callHealthOfApp } from '../src/app-health';
import { resolveEndpoints } from '../src/endpoints';

describe('callHealthOfApp', () => {
  const app = {
    azureTenantId: '3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b',
    clientId: '9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a',
  };
  const global = resolveEndpoints('commercial', undefined);

  it('should keep the replaced CallHealth for the same app, and start afresh for another app or cloud', () => {
    const first = callHealthOfApp(app, global, undefined);
    expect(callHealthOfApp({ ...app }, global, first).health).toBe(first.health);
    expect(
      callHealthOfApp({ ...app, clientId: '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d' }, global, first).health,
    ).not.toBe(first.health);
    expect(callHealthOfApp(app, resolveEndpoints('gcc', undefined), first).health).not.toBe(first.health);
  });

  it('should start afresh when the region, and so the API host, changes', () => {
    const wrongRegion = callHealthOfApp(app, resolveEndpoints('commercial', 'us'), undefined);
    const fixed = callHealthOfApp(app, resolveEndpoints('commercial', 'eu'), wrongRegion);
    expect(fixed.health).not.toBe(wrongRegion.health);
    expect(callHealthOfApp(app, global, fixed).health).not.toBe(fixed.health);
    // The operator's API host decides, whatever the tenant's region.
    const overridden = { apiBase: 'https://mde.example.test' };
    const viaProxy = callHealthOfApp(app, resolveEndpoints('commercial', 'us', overridden), undefined);
    expect(callHealthOfApp(app, resolveEndpoints('commercial', 'eu', overridden), viaProxy).health).toBe(
      viaProxy.health,
    );
  });

  it('should keep the replaced CallHealth when the ids differ only in case', () => {
    const first = callHealthOfApp(app, global, undefined);
    const upper = { azureTenantId: app.azureTenantId.toUpperCase(), clientId: app.clientId.toUpperCase() };
    expect(callHealthOfApp(upper, global, first).health).toBe(first.health);
  });
});

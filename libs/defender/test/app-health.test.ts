import { callHealthOfApp } from '../src/app-health';

describe('callHealthOfApp', () => {
  const app = { azureTenantId: 'dir-1', clientId: 'app-1', cloud: 'commercial' };

  it('should keep the replaced CallHealth for the same app, and start afresh for another app or cloud', () => {
    const first = callHealthOfApp(app, undefined);
    expect(callHealthOfApp({ ...app }, first).health).toBe(first.health);
    expect(callHealthOfApp({ ...app, clientId: 'app-2' }, first).health).not.toBe(first.health);
    expect(callHealthOfApp({ ...app, cloud: 'gcc' }, first).health).not.toBe(first.health);
  });
});

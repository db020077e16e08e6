import { openBackend } from '../../../src/commands/defender/backend';

describe('openBackend', () => {
  it('openBackend should take URS_DEFENDER_SCOPE as the token scope of every tenant', async () => {
    const scope = 'https://api-gov.securitycenter.microsoft.us/.default';
    const backend = await openBackend({ URS_DEFENDER_SCOPE: scope }, false, () => undefined);
    try {
      expect(backend.overrides.scope).toBe(scope);
    } finally {
      await backend.close();
    }
  });

  it.each(['https://api.security.microsoft.com/.default', 'https://api-gov.securitycenter.microsoft.us'])(
    'openBackend should refuse the URS_DEFENDER_SCOPE %j, naming the variable',
    async (value) => {
      await expect(openBackend({ URS_DEFENDER_SCOPE: value }, false, () => undefined)).rejects.toThrow(
        /^URS_DEFENDER_SCOPE must /,
      );
    },
  );
});

import { CLOUDS, REGIONS } from '@urs/contracts';
import { DEFENDER_CLOUDS, DEFENDER_REGIONS, resolveEndpoints } from '@urs/defender';

// A registration names a cloud and a region the registrar checks against the contract; the pollers and
// vuln-fetchers resolve them to Microsoft's hosts. A value only one side knows is refused or never reached.
describe('the clouds and regions a registration may name', () => {
  it('should be exactly those the Defender client resolves', () => {
    expect([...REGIONS].sort()).toEqual([...DEFENDER_REGIONS].sort());
    expect([...CLOUDS].sort()).toEqual([...DEFENDER_CLOUDS].sort());
  });

  it("should include every regional host Microsoft's API pages list, aea among them", () => {
    expect(REGIONS).toEqual(expect.arrayContaining(['us', 'eu', 'uk', 'au', 'swa', 'ina', 'aea']));
    expect(resolveEndpoints('commercial', 'aea').apiBase).toBe('https://aea.api.security.microsoft.com');
  });
});

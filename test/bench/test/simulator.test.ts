import { addTenantTimeoutMs } from '../src/simulator';

describe('addTenantTimeoutMs', () => {
  it("addTenantTimeoutMs should keep the control calls' 30 s for the simulator's light export", () => {
    expect(addTenantTimeoutMs(100_000, undefined)).toBe(30_000);
  });

  it('addTenantTimeoutMs should leave a heavier export time to be rendered as the tenant is added', () => {
    // 100,000 devices at 57 rows: 5.7 million rows, over 30 s at the ~23 µs a row measured under load.
    expect(addTenantTimeoutMs(100_000, 57)).toBeGreaterThan(2 * 5_700_000 * 0.023);
    expect(addTenantTimeoutMs(1_000, 57)).toBeLessThan(60_000);
  });
});

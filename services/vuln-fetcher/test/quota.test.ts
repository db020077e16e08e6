import { quotaGateFor, UNLIMITED_QUOTA_GATE } from '../src/quota';

describe('quotaGateFor', () => {
  it('quotaGateFor should never wait when quotas are off', async () => {
    const gate = quotaGateFor('off', {} as never, 'p:');
    expect(gate).toBe(UNLIMITED_QUOTA_GATE);
    const started = Date.now();
    // Far more than Microsoft's 50 per-device calls a minute: none of them waits.
    for (let i = 0; i < 1_000; i++) await gate.acquire('tenant', 'vulnerabilities');
    await gate.block('tenant', 'vulnerabilities', 60_000);
    await gate.acquire('tenant', 'vulnerabilities');
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('quotaGateFor should keep the Redis quota gate for Microsoft quotas', async () => {
    const calls: unknown[][] = [];
    // The Redis gate runs its sliding-window script; a fake client answering "0 ms to wait" shows it is used.
    const redis = { eval: async (...args: unknown[]) => (calls.push(args), 0) };
    const gate = quotaGateFor('microsoft', redis as never, 'p:');
    expect(gate).not.toBe(UNLIMITED_QUOTA_GATE);
    await gate.acquire('tenant', 'vulnerabilities');
    expect(calls).toHaveLength(1);
    expect(calls[0]).toContain('p:defender:quota:tenant:vulnerabilities:60000');
  });
});

import { silentLogger } from '@urs/logging';
import { canRetry, errorCode, isInfrastructureFault, leaseTime } from '@urs/resilience';
import type { TenantLease } from '@urs/store';
import { whileHeld, type LeaseHeld } from '../src/lease';

const lease: TenantLease = { tenantId: 't1', holder: 'a', ttlMs: 60 };

/** What `throwIfLost` throws, or undefined. */
function thrownBy(held: LeaseHeld): unknown {
  try {
    held.throwIfLost();
    return undefined;
  } catch (error) {
    return error;
  }
}

/** Runs a work that waits until its lease is lost and answers what its check threw then. */
const untilLost = (renewTenantLease: () => Promise<boolean>) =>
  whileHeld({ renewTenantLease }, lease, leaseTime(), silentLogger, async (held) => {
    expect(thrownBy(held)).toBeUndefined();
    await new Promise((resolve) => held.signal.addEventListener('abort', resolve));
    return thrownBy(held);
  });

describe('whileHeld', () => {
  it("should stop its work's next step once a renewal finds the lease another's, retryably", async () => {
    const error = await untilLost(async () => false);
    expect(errorCode(error)).toBe('TENANT_LEASE_LOST');
    expect(canRetry(error)).toBe(true);
    // Another replica holds it: the work's own failure, not one of Redis.
    expect(isInfrastructureFault(error)).toBe(false);
  });

  it("should stop its work's next step once Redis answered no renewal for the lease's length, as a fault of Redis", async () => {
    // Renewals the client queues while Redis is away: never answered.
    const error = await untilLost(() => new Promise<boolean>(() => undefined));
    expect(errorCode(error)).toBe('TENANT_LEASE_LOST');
    expect(canRetry(error)).toBe(true);
    expect(isInfrastructureFault(error)).toBe(true);
  });

  it("should stop its work's next step once its renewals failed for the lease's length, with their error", async () => {
    const error = await untilLost(async () => {
      throw new Error('Connection is closed.');
    });
    expect(errorCode(error)).toBe('TENANT_LEASE_LOST');
    expect((error as Error).cause).toMatchObject({ message: 'Connection is closed.' });
  });

  it('should not take its lease for lapsed when the wall clock steps forward by more than its length', async () => {
    const longLease: TenantLease = { tenantId: 't1', holder: 'a', ttlMs: 10_000 };
    const wall = Date.now();
    const thrown = await whileHeld(
      { renewTenantLease: async () => true },
      longLease,
      leaseTime(),
      silentLogger,
      async (held) => {
        // NTP steps the clock an hour forward: the lease, taken a moment ago, still holds.
        const stepped = jest.spyOn(Date, 'now').mockReturnValue(wall + 3_600_000);
        try {
          return thrownBy(held);
        } finally {
          stepped.mockRestore();
        }
      },
    );
    expect(thrown).toBeUndefined();
  });
});

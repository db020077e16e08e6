import { UrsError, errorCode } from '../src/errors';
import { isInfrastructureFault } from '../src/faults';
import { holdRenewed, type RenewedHold } from '../src/hold-renewed';
import { createLeaseClock, leaseTime } from '../src/lease-clock';

class LostError extends Error {
  constructor(cause?: unknown) {
    super('lost', cause === undefined ? undefined : { cause });
  }
}

/** What `throwIfLost` throws, or undefined. */
function thrownBy(hold: RenewedHold): unknown {
  try {
    hold.throwIfLost();
    return undefined;
  } catch (error) {
    return error;
  }
}

/** Holds with `renew` until the hold is lost, and answers what its check threw then. */
async function untilLost(renew: () => Promise<boolean>): Promise<unknown> {
  const hold = holdRenewed({
    takenAt: leaseTime(),
    leaseMs: 60,
    renew,
    lost: (cause) => new LostError(cause),
    what: 'the thing',
  });
  try {
    expect(thrownBy(hold)).toBeUndefined();
    await new Promise((resolve) => hold.signal.addEventListener('abort', resolve));
    expect(hold.signal.reason).toBeInstanceOf(LostError);
    return thrownBy(hold);
  } finally {
    hold.stop();
  }
}

describe('holdRenewed', () => {
  afterEach(() => {
    jest.restoreAllMocks();
  });

  it('should be lost, with no cause, once a renewal answers that it is no longer held', async () => {
    const error = await untilLost(async () => false);
    expect(error).toBeInstanceOf(LostError);
    expect((error as Error).cause).toBeUndefined();
  });

  it("should be lost once Redis answered no renewal for the hold's length, the cause a fault of Redis", async () => {
    // Renewals the client queues while Redis is away: never answered.
    const error = await untilLost(() => new Promise<boolean>(() => undefined));
    expect(error).toBeInstanceOf(LostError);
    const cause = (error as Error).cause;
    expect(errorCode(cause)).toBe('REDIS_UNAVAILABLE');
    expect(isInfrastructureFault(cause)).toBe(true);
    expect((cause as Error).message).toBe('Redis answered no renewal of the thing for 60 ms');
  });

  it("should keep a failed renewal's error as the cause once its renewals failed for the hold's length", async () => {
    const refused = new UrsError('REDIS_REFUSED', 'Redis refused', { canRetry: true });
    const errors: unknown[] = [];
    const hold = holdRenewed({
      takenAt: leaseTime(),
      leaseMs: 60,
      renew: () => Promise.reject(refused),
      lost: (cause) => new LostError(cause),
      what: 'the thing',
      onRenewalError: (error) => errors.push(error),
    });
    try {
      await new Promise((resolve) => hold.signal.addEventListener('abort', resolve));
      expect((thrownBy(hold) as Error).cause).toBe(refused);
      expect(errors[0]).toBe(refused);
    } finally {
      hold.stop();
    }
  });

  it('should stay held when the wall clock steps forward by more than its length', async () => {
    const hold = holdRenewed({
      takenAt: leaseTime(),
      leaseMs: 60,
      renew: async () => true,
      lost: (cause) => new LostError(cause),
      what: 'the thing',
    });
    try {
      jest.spyOn(Date, 'now').mockReturnValue(Date.now() + 20_000);
      // Several lengths of renewals that all hold.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(hold.signal.aborted).toBe(false);
      expect(thrownBy(hold)).toBeUndefined();
    } finally {
      hold.stop();
    }
  });

  it('should renew at once when told, on the clock it was given, and say whether it is held without throwing', async () => {
    let now = 0;
    const clock = createLeaseClock(0, 60, () => now);
    const renewals: number[] = [];
    const hold = holdRenewed({
      clock,
      leaseMs: 60,
      immediately: true,
      renew: async () => {
        renewals.push(now);
        return true;
      },
      lost: (cause) => new LostError(cause),
      what: 'the thing',
    });
    try {
      // Taken a while ago: renewed before a third of its length from now.
      now = 50;
      expect(renewals).toEqual([0]);
      await new Promise((resolve) => setImmediate(resolve));
      // Held for its length from that renewal, by the clock given.
      expect(hold.held()).toBe(true);
      now = 61;
      expect(hold.held()).toBe(false);
      expect(hold.signal.aborted).toBe(true);
      expect(thrownBy(hold)).toBeInstanceOf(LostError);
    } finally {
      hold.stop();
    }
  });

  it('should tell those who listen why it was lost, once', async () => {
    const told: unknown[] = [];
    const hold = holdRenewed({
      takenAt: leaseTime(),
      leaseMs: 60,
      renew: async () => false,
      lost: (cause) => new LostError(cause),
      what: 'the thing',
      onLost: (cause) => told.push(cause),
    });
    try {
      await new Promise((resolve) => hold.signal.addEventListener('abort', resolve));
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(told).toEqual([undefined]);
    } finally {
      hold.stop();
    }
  });
});

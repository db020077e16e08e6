import { createLeaseClock } from '../src/lease-clock';

// A lease is held by the time that passed since Redis confirmed it, not by the wall clock's reading.

describe('createLeaseClock', () => {
  afterEach(() => {
    jest.restoreAllMocks();
  });

  it('should keep a lease held when the wall clock steps forward, and let it lapse when its time passed', () => {
    let elapsedMs = 0;
    const clock = createLeaseClock(0, 60_000, () => elapsedMs);
    // NTP steps the wall clock 20 s forward a second into the lease.
    elapsedMs = 1_000;
    jest.spyOn(Date, 'now').mockReturnValue(Date.now() + 20_000);
    expect(clock.held()).toBe(true);
    clock.confirmed(clock.reading());
    elapsedMs = 60_999;
    expect(clock.held()).toBe(true);
    elapsedMs = 61_000;
    expect(clock.held()).toBe(false);
  });

  it("should hold by a monotonic clock by default, never by the wall clock's", () => {
    const clock = createLeaseClock(performance.now(), 10_000);
    jest.spyOn(Date, 'now').mockReturnValue(Date.now() + 20_000);
    expect(clock.held()).toBe(true);
  });
});

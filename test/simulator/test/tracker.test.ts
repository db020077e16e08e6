import type { ServerResponse } from 'node:http';
import { StatsTracker } from '../src/tracker';

/** Just enough of a response for the tracker: `end` and a `close` listener. */
function response(): ServerResponse {
  return { end: () => undefined, once: () => undefined } as unknown as ServerResponse;
}

describe('StatsTracker', () => {
  afterEach(() => jest.restoreAllMocks());

  it("firstCallAtByKind should give a call's arrival by the wall clock (Date.now), as the pipeline's timestamps are", () => {
    const tracker = new StatsTracker();
    // A wall clock an hour off the monotonic clock's origin: a step since the simulator started.
    const wall = Date.now() + 3_600_000;
    jest.spyOn(Date, 'now').mockReturnValue(wall);
    const res = response();
    tracker.enter(res);
    jest.spyOn(Date, 'now').mockReturnValue(wall + 5_000);
    tracker.call('vulnerabilities', 'tenant', res);
    expect(tracker.snapshot().firstCallAtByKind['vulnerabilities']).toBe(wall);
  });
});

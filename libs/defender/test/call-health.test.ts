import { Registry } from '@urs/telemetry';
import { CallHealth, createCallMetrics, DefenderErrorCode, DegradedCalls } from '../src';

/**
 * A tenant's health on a clock the test moves, with places for degraded tenants of its own (no limit unless
 * `options` shares some), so that only its own limits are seen.
 */
function healthAt(options: ConstructorParameters<typeof CallHealth>[1] = {}) {
  const clock = { now: 1_000_000 };
  const health = new CallHealth('tenant-a', {
    now: () => clock.now,
    degradedCalls: new DegradedCalls(Infinity),
    ...options,
  });
  return { health, clock };
}

/** Starts as many calls as the health lets go at once. */
function startAll(health: CallHealth, tries: number): number {
  let started = 0;
  for (let i = 0; i < tries; i++) if (health.start()) started++;
  return started;
}

/** `n` calls started one after the other, each failing with `failure`. */
function failCalls(health: CallHealth, n: number, failure = 'no answer within 30 s'): void {
  for (let i = 0; i < n; i++) {
    expect(health.start()).toBe(true);
    health.leave('failed', failure);
  }
}

/** `n` calls started one after the other, each answered slowly. */
function answerSlowly(health: CallHealth, n: number): void {
  for (let i = 0; i < n; i++) {
    expect(health.start()).toBe(true);
    health.leave('answeredSlowly');
  }
}

describe('CallHealth', () => {
  it('start should let every call go while the tenant’s calls are answered', () => {
    const { health } = healthAt();
    expect(startAll(health, 50)).toBe(50);
    for (let i = 0; i < 50; i++) health.leave('answered');
    expect(startAll(health, 50)).toBe(50);
  });

  it('start should let one call go at a time after oneAtATimeAfter failures in a row, not before', () => {
    const { health } = healthAt({ oneAtATimeAfter: 3 });
    failCalls(health, 2);
    expect(startAll(health, 5)).toBe(5);
    for (let i = 0; i < 5; i++) health.leave('neither');
    failCalls(health, 1);
    expect(health.start()).toBe(true);
    expect(health.start()).toBe(false);
  });

  it('an answered call should clear the failures in a row, so scattered failures never slow the tenant', () => {
    const { health } = healthAt({ oneAtATimeAfter: 3 });
    for (let round = 0; round < 10; round++) {
      failCalls(health, 2);
      expect(health.start()).toBe(true);
      health.leave('answered');
    }
    expect(startAll(health, 20)).toBe(20);
  });

  it('each answered call should double what may be in flight, until the calls are free again', () => {
    const { health } = healthAt({ oneAtATimeAfter: 1, freeAbove: 10 });
    failCalls(health, 1);
    const allowed: number[] = [];
    for (let round = 0; round < 5; round++) {
      const started = startAll(health, 30);
      allowed.push(started);
      health.leave('answered');
      for (let i = 1; i < started; i++) health.leave('neither');
    }
    expect(allowed).toEqual([1, 2, 4, 8, 30]);
  });

  it('throttled, stopped or unreadable answers (neither) should not count as failures', () => {
    const { health } = healthAt({ oneAtATimeAfter: 2, holdBackAfter: 2 });
    for (let i = 0; i < 20; i++) {
      expect(health.start()).toBe(true);
      health.leave('neither');
    }
    expect(health.heldBack()).toBeUndefined();
    expect(startAll(health, 5)).toBe(5);
  });

  it('start should throw UNAVAILABLE naming the tenant, the failures and the time after holdBackAfter failures in a row', () => {
    const { health, clock } = healthAt({ holdBackAfter: 10, holdBackMs: 30_000 });
    failCalls(health, 9);
    expect(health.heldBack()).toBeUndefined();
    failCalls(health, 1, 'answered 503');
    const until = new Date(clock.now + 30_000).toISOString();
    let thrown: unknown;
    try {
      health.start();
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({
      code: DefenderErrorCode.UNAVAILABLE,
      canRetry: true,
      message:
        `The Defender API of tenant tenant-a failed 10 calls in a row (last: answered 503); ` +
        `its calls are held back until ${until}, then one is tried again`,
    });
    expect(CallHealth.isHeldBack(thrown)).toBe(true);
  });

  it('after holdBackMs one call should be tried; its failure should hold the calls back again, its answer free them', () => {
    const { health, clock } = healthAt({ holdBackAfter: 4, holdBackMs: 1_000 });
    failCalls(health, 4);
    clock.now += 999;
    expect(() => health.start()).toThrow(/held back/);
    clock.now += 1;
    expect(health.start()).toBe(true);
    expect(health.start()).toBe(false);
    health.leave('failed', 'ECONNRESET');
    expect(health.heldBack()?.message).toContain('failed 5 calls in a row (last: ECONNRESET)');
    clock.now += 1_000;
    expect(health.start()).toBe(true);
    health.leave('answered');
    expect(health.heldBack()).toBeUndefined();
    expect(startAll(health, 2)).toBe(2);
  });

  it('heldBack should keep the call’s own failure as its cause', () => {
    const { health } = healthAt({ holdBackAfter: 1 });
    failCalls(health, 1);
    const own = new Error('the call’s own failure');
    expect(health.heldBack(own)?.cause).toBe(own);
    expect(CallHealth.isHeldBack(own)).toBe(false);
  });

  it('turn should wake a waiting call when one of the tenant’s calls ends, or when its signal aborts', async () => {
    const { health } = healthAt({ oneAtATimeAfter: 1, holdBackAfter: 5 });
    failCalls(health, 1);
    expect(health.start()).toBe(true);
    expect(health.start()).toBe(false);
    let woke = false;
    const waiting = health.turn().then(() => (woke = true));
    await Promise.resolve();
    expect(woke).toBe(false);
    health.leave('answered');
    await waiting;
    expect(health.start()).toBe(true);

    const stop = new AbortController();
    const stopped = health.turn(stop.signal);
    stop.abort();
    await expect(stopped).resolves.toBeUndefined();
    const already = health.turn(stop.signal);
    await expect(already).resolves.toBeUndefined();
  });

  it('an answered call should lift a hold-back at once, also one that began while it was in flight', () => {
    const { health } = healthAt({ holdBackAfter: 10 });
    for (let i = 0; i < 11; i++) expect(health.start()).toBe(true);
    for (let i = 0; i < 10; i++) health.leave('failed', 'no answer within 30 s');
    expect(health.heldBack()?.message).toContain('failed 10 calls in a row');
    health.leave('answered');
    expect(health.heldBack()).toBeUndefined();
    expect(health.start()).toBe(true);
  });

  it('a call ending should wake as many waiting calls as may go, the longest waiting first', async () => {
    const { health } = healthAt({ oneAtATimeAfter: 1 });
    failCalls(health, 1);
    expect(health.start()).toBe(true);
    const woken: number[] = [];
    const waits = [0, 1, 2].map((i) => health.turn().then(() => woken.push(i)));
    health.leave('neither');
    await new Promise((resolve) => setImmediate(resolve));
    expect(woken).toEqual([0]);
    expect(health.start()).toBe(true);
    health.leave('answered');
    await Promise.all(waits);
    expect(woken).toEqual([0, 1, 2]);
  });

  it('a waiting call whose signal aborts should leave the queue, so the next call still gets the place', async () => {
    const { health } = healthAt({ oneAtATimeAfter: 1 });
    failCalls(health, 1);
    expect(health.start()).toBe(true);
    const stop = new AbortController();
    let secondWoke = false;
    const first = health.turn(stop.signal);
    const second = health.turn().then(() => (secondWoke = true));
    stop.abort();
    await first;
    health.leave('neither');
    await second;
    expect(secondWoke).toBe(true);
  });

  it('start should let slowLimit calls go at once after slowAfter slow answers in a row, not before', () => {
    const { health } = healthAt({ slowAfter: 3, slowLimit: 2 });
    answerSlowly(health, 2);
    expect(startAll(health, 10)).toBe(10);
    for (let i = 0; i < 10; i++) health.leave('neither');
    answerSlowly(health, 1);
    expect(startAll(health, 10)).toBe(2);
    // Answered slowly, the calls stay at 2: none fails, none is held back.
    for (let i = 0; i < 10; i++) {
      health.leave('answeredSlowly');
      expect(startAll(health, 10)).toBe(1);
    }
    expect(health.heldBack()).toBeUndefined();
  });

  it('slowLimit should default to a fifth of freeAbove', () => {
    const { health } = healthAt({ freeAbove: 10 });
    answerSlowly(health, 3);
    expect(startAll(health, 10)).toBe(2);
    const few = healthAt({ freeAbove: 3 }).health;
    answerSlowly(few, 3);
    expect(startAll(few, 10)).toBe(1);
  });

  it('each call answered fast should double what a slow tenant may have in flight, until its calls are free again', () => {
    const { health } = healthAt({ slowAfter: 3, freeAbove: 10 });
    answerSlowly(health, 3);
    const allowed: number[] = [];
    for (let round = 0; round < 4; round++) {
      const started = startAll(health, 30);
      allowed.push(started);
      health.leave('answered');
      for (let i = 1; i < started; i++) health.leave('neither');
    }
    expect(allowed).toEqual([2, 4, 8, 30]);
  });

  it('an answer fast should clear the slow calls in a row, so scattered slow answers never limit the tenant', () => {
    const { health } = healthAt({ slowAfter: 3 });
    for (let round = 0; round < 10; round++) {
      answerSlowly(health, 2);
      expect(health.start()).toBe(true);
      health.leave('answered');
    }
    expect(startAll(health, 20)).toBe(20);
  });

  it('slow failures and slow answers should count together as slow calls in a row', () => {
    const { health } = healthAt({ slowAfter: 3, oneAtATimeAfter: 3, slowLimit: 2 });
    failCalls(health, 1);
    answerSlowly(health, 1);
    failCalls(health, 1);
    expect(startAll(health, 10)).toBe(2);
  });

  it('a slow answer should lift a hold-back and let the calls out again up to slowLimit only', () => {
    const { health } = healthAt({ holdBackAfter: 10, slowLimit: 2 });
    for (let i = 0; i < 11; i++) expect(health.start()).toBe(true);
    for (let i = 0; i < 10; i++) health.leave('failed', 'answered 503');
    expect(health.heldBack()).toBeDefined();
    health.leave('answeredSlowly');
    expect(health.heldBack()).toBeUndefined();
    expect(startAll(health, 10)).toBe(2);
    health.leave('answeredSlowly');
    expect(startAll(health, 10)).toBe(1);
  });
});

describe('CallHealth of several tenants sharing the places for degraded tenants', () => {
  /** Tenants `ids`, their health sharing `places` places for degraded tenants. */
  function tenants(places: number, ...ids: string[]) {
    const degradedCalls = new DegradedCalls(places);
    return ids.map((id) => new CallHealth(id, { degradedCalls, oneAtATimeAfter: 3 }));
  }

  /** One call of `health` failing slowly: its tenant is degraded from then on. */
  function failOnce(health: CallHealth): void {
    expect(health.start()).toBe(true);
    health.leave('failed', 'no answer within 30 s');
  }

  it('a degraded tenant’s call that asked for its slot as a healthy one’s may not go; one that took a place may, and its turn ends when the tenant answers', () => {
    const [a] = tenants(2, 'a') as [CallHealth];
    expect(a.degradedTurn()).toBeUndefined();
    expect(a.start(false)).toBe(true);
    a.leave('failed', 'no answer within 30 s');
    // Degraded now: a call asking as a healthy tenant's (no place shared by every process) goes back.
    expect(a.start(false)).toBe(false);
    const turn = a.degradedTurn();
    expect(turn?.aborted).toBe(false);
    expect(a.start(true)).toBe(true);
    a.leave('answered');
    // Answered: the degraded turn is over (its calls waiting for a place go), and calls ask as healthy again.
    expect(turn?.aborted).toBe(true);
    expect(a.degradedTurn()).toBeUndefined();
    expect(a.start(false)).toBe(true);
  });

  it('degraded tenants should have the places between them, however few calls each has in flight, and a healthy one all it asks for', () => {
    const [a, b, c, healthy] = tenants(2, 'a', 'b', 'c', 'healthy') as [
      CallHealth,
      CallHealth,
      CallHealth,
      CallHealth,
    ];
    for (const health of [a, b, c]) failOnce(health);
    expect(a.start()).toBe(true);
    expect(b.start()).toBe(true);
    // Each of them alone may have 2 more in flight (one at a time only after 3 failures): the places are taken.
    expect(a.start()).toBe(false);
    expect(b.start()).toBe(false);
    expect(c.start()).toBe(false);
    expect(startAll(healthy, 20)).toBe(20);
    a.leave('failed', 'no answer within 30 s');
    expect(c.start()).toBe(true);
    expect(a.start()).toBe(false);
  });

  it('a tenant’s calls in flight at its first slow failure should take places, and give them back at its first answer', () => {
    const [a, b] = tenants(2, 'a', 'b') as [CallHealth, CallHealth];
    failOnce(b);
    expect(startAll(a, 4)).toBe(4);
    a.leave('failed', 'no answer within 30 s');
    // a's 3 calls still in flight are a degraded tenant's now: b waits though a started them healthy.
    expect(b.start()).toBe(false);
    a.leave('answered');
    expect(b.start()).toBe(true);
    expect(b.start()).toBe(true);
    expect(b.start()).toBe(false);
  });

  it('a call waiting for a place should be woken when a degraded tenant’s call ends, or when its signal aborts', async () => {
    const [a, b] = tenants(1, 'a', 'b') as [CallHealth, CallHealth];
    for (const health of [a, b]) failOnce(health);
    expect(a.start()).toBe(true);
    let bWoke = false;
    const bTurn = b.turn().then(() => (bWoke = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(bWoke).toBe(false);
    a.leave('failed', 'no answer within 30 s');
    await bTurn;
    expect(b.start()).toBe(true);

    const stop = new AbortController();
    const stopped = a.turn(stop.signal);
    stop.abort();
    // What it waited for when it was stopped, for the call's error.
    await expect(stopped).resolves.toBe('degraded');
  });

  it('a call waiting for a place should be woken when its own tenant answers again, the places still taken', async () => {
    const [a, c] = tenants(1, 'a', 'c') as [CallHealth, CallHealth];
    // c's call started while it was healthy, still in flight.
    expect(c.start()).toBe(true);
    failOnce(a);
    expect(a.start()).toBe(true);
    failOnce(c);
    let cWoke = false;
    const cTurn = c.turn().then(() => (cWoke = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(cWoke).toBe(false);
    c.leave('answered');
    await cTurn;
    expect(c.start()).toBe(true);
    expect(a.start()).toBe(false);
  });

  it('a call woken for a place that its own tenant’s limit no longer lets go should pass the place to the next waiting call', async () => {
    const [a, b] = tenants(2, 'a', 'b') as [CallHealth, CallHealth];
    failOnce(a);
    failOnce(a);
    expect(a.start()).toBe(true);
    expect(a.start()).toBe(true);
    failOnce(b);
    let aWoke = false;
    let bWoke = false;
    const aTurn = a.turn().then(() => (aWoke = true));
    void b.turn().then(() => (bWoke = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect([aWoke, bWoke]).toEqual([false, false]);
    // a's third slow failure in a row: its calls go one at a time, and its other call is still in flight.
    a.leave('failed', 'no answer within 30 s');
    await new Promise((resolve) => setImmediate(resolve));
    // a's call woken for the freed place waits for its own tenant's place; b's call has the place at once,
    // not when a's other call ends (up to a whole request timeout).
    expect([aWoke, bWoke]).toEqual([false, true]);
    expect(b.start()).toBe(true);
    a.leave('answered');
    await aTurn;
  });

  it('a freed place should let one waiting call go, the longest waiting, however many look for a place before it starts', async () => {
    const [a, b, c, d, e] = tenants(1, 'a', 'b', 'c', 'd', 'e') as [
      CallHealth,
      CallHealth,
      CallHealth,
      CallHealth,
      CallHealth,
    ];
    // a's calls go one at a time (3 slow failures in a row); its call in flight holds the place.
    for (let i = 0; i < 3; i++) failOnce(a);
    expect(a.start()).toBe(true);
    for (const health of [b, c, d, e]) failOnce(health);
    /** The calls let go, in order: each would take a shared slot. */
    const went: string[] = [];
    const turnOf = (health: CallHealth, name: string, signal?: AbortSignal): Promise<void> =>
      health.turn(signal).then(() => void went.push(name));
    // a's next call waits for a's own place; b's, c's and d's for the place.
    const waits = [turnOf(a, 'a'), turnOf(b, 'b'), turnOf(c, 'c'), turnOf(d, 'd')];
    await new Promise((resolve) => setImmediate(resolve));
    expect(went).toEqual([]);
    // a's call ends: a's own place and the one place for degraded tenants free together.
    a.leave('failed', 'no answer within 30 s');
    await new Promise((resolve) => setImmediate(resolve));
    // A call that comes meanwhile, and another that stops waiting, do not let a second one through either.
    const stop = new AbortController();
    const stopped = e.turn(stop.signal);
    stop.abort();
    await stopped;
    e.passTurn();
    const late = turnOf(e, 'e');
    await new Promise((resolve) => setImmediate(resolve));
    expect(went).toEqual(['b']);
    expect(b.start()).toBe(true);
    b.leave('failed', 'no answer within 30 s');
    await new Promise((resolve) => setImmediate(resolve));
    // a's call, back in line behind the place's other calls, and each of them in turn.
    expect(went).toEqual(['b', 'c']);
    for (const [health, next] of [
      [c, 'd'],
      [d, 'a'],
      [a, 'e'],
    ] as const) {
      expect(health.start()).toBe(true);
      health.leave('failed', 'no answer within 30 s');
      await new Promise((resolve) => setImmediate(resolve));
      expect(went.at(-1)).toBe(next);
    }
    await Promise.all([...waits, late]);
  });
});

describe('the gauges of the places for degraded tenants', () => {
  /** The values of the degraded tenants' gauges `registry` serves. */
  function served(registry: Registry): Record<string, number> {
    const names = [
      'urs_defender_degraded_tenants',
      'urs_defender_degraded_calls_running',
      'urs_defender_degraded_calls_waiting',
      'urs_defender_degraded_calls_max',
    ];
    const lines = registry.expose().split('\n');
    return Object.fromEntries(
      names.map((name) => [name, Number(lines.find((line) => line.startsWith(`${name} `))?.split(' ')[1])]),
    );
  }

  it('should serve the degraded tenants calling, their calls in flight and waiting for a place, and the places', async () => {
    const degradedCalls = new DegradedCalls(2);
    const registry = new Registry({ processMetrics: false });
    createCallMetrics(registry, degradedCalls);
    const [a, b, c, healthy] = ['a', 'b', 'c', 'healthy'].map(
      (id) => new CallHealth(id, { degradedCalls, oneAtATimeAfter: 3 }),
    ) as [CallHealth, CallHealth, CallHealth, CallHealth];
    expect(served(registry)).toEqual({
      urs_defender_degraded_tenants: 0,
      urs_defender_degraded_calls_running: 0,
      urs_defender_degraded_calls_waiting: 0,
      urs_defender_degraded_calls_max: 2,
    });
    for (const health of [a, b, c]) {
      expect(health.start()).toBe(true);
      health.leave('failed', 'no answer within 30 s');
    }
    expect(startAll(healthy, 5)).toBe(5);
    expect(a.start()).toBe(true);
    expect(a.start()).toBe(true);
    let cWoke = false;
    const cTurn = c.turn().then(() => (cWoke = true));
    const bTurn = b.turn();
    await new Promise((resolve) => setImmediate(resolve));
    expect(cWoke).toBe(false);
    // a's 2 calls hold both places, c's and b's wait; the healthy tenant's calls are no degraded tenant's.
    expect(served(registry)).toEqual({
      urs_defender_degraded_tenants: 3,
      urs_defender_degraded_calls_running: 2,
      urs_defender_degraded_calls_waiting: 2,
      urs_defender_degraded_calls_max: 2,
    });
    // a's call answered: a is no longer degraded, its other call leaves the places, and both waiting go.
    a.leave('answered');
    await Promise.all([cTurn, bTurn]);
    expect(c.start()).toBe(true);
    expect(served(registry)).toEqual({
      urs_defender_degraded_tenants: 1,
      urs_defender_degraded_calls_running: 1,
      urs_defender_degraded_calls_waiting: 0,
      urs_defender_degraded_calls_max: 2,
    });
    c.leave('answered');
    a.leave('answered');
    expect(served(registry)).toEqual({
      urs_defender_degraded_tenants: 0,
      urs_defender_degraded_calls_running: 0,
      urs_defender_degraded_calls_waiting: 0,
      urs_defender_degraded_calls_max: 2,
    });
  });
});

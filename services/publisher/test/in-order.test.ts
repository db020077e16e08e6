import { createInOrder } from '../src/in-order';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('createInOrder', () => {
  it('should run the tasks of one key one at a time, in the order they were asked for', async () => {
    const inOrder = createInOrder();
    const events: string[] = [];
    const gates: (() => void)[] = [];
    const task = (name: string) => () =>
      new Promise<string>((resolve) => {
        events.push(`start ${name}`);
        gates.push(() => {
          events.push(`end ${name}`);
          resolve(name);
        });
      });
    const results = [inOrder('t1', task('a')), inOrder('t1', task('b')), inOrder('t1', task('c'))];
    await tick();
    expect(events).toEqual(['start a']);
    gates.shift()?.();
    await tick();
    expect(events).toEqual(['start a', 'end a', 'start b']);
    gates.shift()?.();
    await tick();
    gates.shift()?.();
    await expect(Promise.all(results)).resolves.toEqual(['a', 'b', 'c']);
    expect(events).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });

  it('should run tasks of different keys beside each other', async () => {
    const inOrder = createInOrder();
    const started: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const first = inOrder('t1', async () => {
      started.push('t1');
      await held;
    });
    const second = inOrder('t2', async () => {
      started.push('t2');
    });
    await second;
    expect(started).toEqual(['t1', 't2']);
    release();
    await first;
  });

  it('should let the next task run when one fails, and pass the failure to its caller', async () => {
    const inOrder = createInOrder();
    const failed = inOrder('t1', async () => {
      throw new Error('boom');
    });
    const next = inOrder('t1', async () => 'next');
    await expect(failed).rejects.toThrow('boom');
    await expect(next).resolves.toBe('next');
  });

  it('within should take its place in line and run once the tasks before it are done, before those asked after it', async () => {
    const inOrder = createInOrder();
    const events: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const first = inOrder('t1', async () => {
      await held;
      events.push('first');
    });
    const waiting = inOrder.within('t1', 60_000, async () => {
      events.push('within');
      return 'ran';
    });
    const after = inOrder('t1', async () => {
      events.push('after');
    });
    await tick();
    expect(events).toEqual([]);
    release();
    await Promise.all([first, after]);
    await expect(waiting).resolves.toBe('ran');
    expect(events).toEqual(['first', 'within', 'after']);
  });

  it('within should run at once on a free key', async () => {
    const inOrder = createInOrder();
    await expect(inOrder.within('t1', 0, async () => 'ran')).resolves.toBe('ran');
  });

  it('within should give up, its task not run, when its turn does not come within the wait, those after it still waiting for the tasks before', async () => {
    const inOrder = createInOrder();
    const events: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const first = inOrder('t1', async () => {
      await held;
      events.push('first');
    });
    const given = inOrder.within('t1', 10, async () => {
      events.push('within');
    });
    const after = inOrder('t1', async () => {
      events.push('after');
    });
    await expect(given).resolves.toBeUndefined();
    await tick();
    expect(events).toEqual([]);
    release();
    await Promise.all([first, after]);
    expect(events).toEqual(['first', 'after']);
    // The key is free again: the next task runs at once.
    await expect(inOrder.within('t1', 0, async () => 'free')).resolves.toBe('free');
  });
});

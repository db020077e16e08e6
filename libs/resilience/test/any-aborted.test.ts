import { getEventListeners } from 'node:events';
import { anyAborted } from '../src/any-aborted';

describe('anyAborted', () => {
  it('should abort once any of its signals does', () => {
    const [first, second] = [new AbortController(), new AbortController()];
    const any = anyAborted([first.signal, undefined, second.signal]);
    expect(any.signal.aborted).toBe(false);
    second.abort();
    expect(any.signal.aborted).toBe(true);
  });

  it('should be aborted at once when one of its signals already is', () => {
    const stopped = new AbortController();
    stopped.abort();
    expect(anyAborted([new AbortController().signal, stopped.signal]).signal.aborted).toBe(true);
  });

  it('should leave no listener on its signals once released, and no longer follow them', () => {
    const [lasting, own] = [new AbortController(), new AbortController()];
    const any = anyAborted([lasting.signal, own.signal]);
    expect(getEventListeners(lasting.signal, 'abort')).toHaveLength(1);
    any.release();
    expect([getEventListeners(lasting.signal, 'abort'), getEventListeners(own.signal, 'abort')]).toEqual([
      [],
      [],
    ]);
    lasting.abort();
    expect(any.signal.aborted).toBe(false);
  });
});

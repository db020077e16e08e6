/** A signal aborted when what it follows is, and `release` to stop following its sources. */
export interface Interruption {
  signal: AbortSignal;
  release: () => void;
}

/**
 * A signal aborted once any of `signals` is (at once when one already is), and `release` to stop following
 * them. Not AbortSignal.any: Node keeps every signal made from a long-lived one, such as the process's stop
 * signal (nodejs/node#55351).
 */
export function anyAborted(signals: (AbortSignal | undefined)[]): Interruption {
  const any = new AbortController();
  const abort = (): void => any.abort();
  for (const one of signals) {
    if (one?.aborted) abort();
    one?.addEventListener('abort', abort, { once: true });
  }
  return {
    signal: any.signal,
    release: () => {
      for (const one of signals) one?.removeEventListener('abort', abort);
    },
  };
}

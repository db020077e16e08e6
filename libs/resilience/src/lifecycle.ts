/** Resolves with the signal's name on the first SIGTERM or SIGINT (orchestrators stop pods with SIGTERM). */
export function untilShutdownSignal(
  signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'],
): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const handler = (signal: NodeJS.Signals): void => {
      for (const name of signals) process.off(name, handler);
      resolve(signal);
    };
    for (const name of signals) process.on(name, handler);
  });
}

export interface Closer {
  name: string;
  close: () => Promise<void> | void;
}

/**
 * Closes every resource in order, each even if an earlier one failed, and reports the failures.
 * Order matters: stop intake first (consumers), then what they use (producers, Redis), then endpoints.
 */
export async function closeAll(
  closers: readonly Closer[],
  onError: (name: string, error: unknown) => void,
): Promise<void> {
  for (const closer of closers) {
    try {
      await closer.close();
    } catch (error) {
      onError(closer.name, error);
    }
  }
}

/**
 * Keeps a held key (a lease, a claim, a lock) alive while its work runs: calls `renew` every `everyMs`
 * until the returned function is called. `renew` answering false means the key lapsed (`onLost`); a
 * failed call is passed to `onError`, and the next tick tries again. One renewal at a time: a tick that
 * finds the last one still waiting (a slow or absent Redis) sends none, and the next goes as soon as it
 * answers, so renewals never overlap and a late answer never follows a newer one. A renewal that answers
 * after the returned function was called calls no handler: the work ended (its key given back, or about to
 * be), and a late "lost" or failure would report a lapse of work that ended cleanly. `immediately`: the
 * first renewal goes at once (the key was taken a while ago), not `everyMs` from now.
 */
export function keepRenewing(
  renew: () => Promise<boolean>,
  everyMs: number,
  handlers: { onLost?: () => void; onError: (error: unknown) => void },
  options: { immediately?: boolean } = {},
): () => void {
  let stopped = false;
  let waiting = false;
  /** A tick came while the last renewal was waiting. */
  let missed = false;
  const once = (): void => {
    if (stopped) return;
    if (waiting) {
      missed = true;
      return;
    }
    waiting = true;
    missed = false;
    renew()
      .then((held) => {
        if (!held && !stopped) handlers.onLost?.();
      })
      .catch((error: unknown) => {
        if (!stopped) handlers.onError(error);
      })
      .finally(() => {
        waiting = false;
        if (missed) once();
      });
  };
  const timer = setInterval(once, everyMs);
  if (options.immediately) once();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

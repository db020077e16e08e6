/**
 * A signal that aborts when either of two does (a caller's stop and a slot's end, a place's last moment to start
 * a slot, a degraded call's end of its wait for a place), with the reason of the one that did; `done` takes its
 * listeners off both once what it bounds is over. Either may be absent: then it is the other. Not
 * AbortSignal.any: a caller's signal may be the service's own, for weeks, and on Node 20 every signal `any` makes
 * stays in its set of dependants (nodejs/node#55351), one per call.
 */
export function eitherEnds(
  first: AbortSignal | undefined,
  second: AbortSignal,
): { signal: AbortSignal; done: () => void };
export function eitherEnds(
  first: AbortSignal | undefined,
  second: AbortSignal | undefined,
): { signal: AbortSignal | undefined; done: () => void };
export function eitherEnds(
  first: AbortSignal | undefined,
  second: AbortSignal | undefined,
): { signal: AbortSignal | undefined; done: () => void } {
  if (!first || !second) return { signal: first ?? second, done: () => undefined };
  const either = new AbortController();
  const sources = [first, second];
  const abort = (): void => {
    done();
    either.abort((first.aborted ? first : second).reason);
  };
  const done = (): void => {
    for (const source of sources) source.removeEventListener('abort', abort);
  };
  if (first.aborted || second.aborted) abort();
  else for (const source of sources) source.addEventListener('abort', abort);
  return { signal: either.signal, done };
}

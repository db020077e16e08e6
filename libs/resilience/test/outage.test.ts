import { UrsError } from '../src/errors';
import { retryThroughOutage, type OutageLog } from '../src/outage';
import { retryPolicy } from '../src/retry';

function recordingLog() {
  const lines: string[] = [];
  const log: OutageLog = {
    warn: (message) => void lines.push(`warn ${message}`),
    info: (message) => void lines.push(`info ${message}`),
    debug: (message) => void lines.push(`debug ${message}`),
  };
  return { log, lines };
}

const fast = retryPolicy({ maxAttempts: Infinity, initialDelayMs: 1, maxDelayMs: 2 });

describe('retryThroughOutage', () => {
  it('should retry a retryable failure until it succeeds, warning once per outage', async () => {
    const { log, lines } = recordingLog();
    let calls = 0;
    const outages: boolean[] = [];
    const result = await retryThroughOutage(
      async () => {
        if (++calls < 4) throw new Error('Connection error: connect ECONNREFUSED');
        return 'done';
      },
      {
        what: 'reaching it',
        log,
        signal: new AbortController().signal,
        policy: fast,
        onOutage: (down) => void outages.push(down),
      },
    );
    expect(result).toBe('done');
    expect(lines).toEqual([
      'warn reaching it failed; retrying until it succeeds',
      'debug reaching it failed again; retrying',
      'debug reaching it failed again; retrying',
      'info reaching it: succeeded after an outage',
    ]);
    expect(outages).toEqual([true, false]);
  });

  it('should rethrow at once a failure waiting does not mend', async () => {
    const refused = new UrsError('CONFIG_INVALID', 'refused');
    const { log, lines } = recordingLog();
    await expect(
      retryThroughOutage(() => Promise.reject(refused), {
        what: 'x',
        log,
        signal: new AbortController().signal,
      }),
    ).rejects.toBe(refused);
    expect(lines).toEqual([]);
  });

  it('should give up at once when stopped, also while a try is under way', async () => {
    const stop = new AbortController();
    const never = new Promise<void>(() => undefined);
    const waiting = retryThroughOutage(() => never, {
      what: 'x',
      log: recordingLog().log,
      signal: stop.signal,
    });
    stop.abort(new Error('stopping'));
    await expect(waiting).rejects.toThrow('stopping');
  });

  it('should try nothing more once stopped during the wait between tries', async () => {
    const stop = new AbortController();
    let tries = 0;
    const waiting = retryThroughOutage(
      async () => {
        tries++;
        throw new UrsError('KAFKA_AWAY', 'no broker', { canRetry: true });
      },
      {
        what: 'x',
        log: recordingLog().log,
        signal: stop.signal,
        policy: fast,
        // Told of the outage just before its first wait: the stop comes as that wait begins.
        onOutage: (down) => {
          if (down) stop.abort(new Error('stopping'));
        },
      },
    );
    await expect(waiting).rejects.toThrow('no broker');
    expect(tries).toBe(1);
  });
});

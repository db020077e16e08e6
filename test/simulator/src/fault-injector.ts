import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Rng } from './rng';
import type { FaultSpec } from './state';
import type { StatsTracker } from './tracker';

/** The tenant id of the faults that apply to every tenant without faults of its own. */
export const WILDCARD = '*';

/** The faults of a tenant: its own setting, or the WILDCARD one where it has none (or is not known). */
export function faultsFor(
  faults: Map<string, FaultSpec>,
  tenantId: string | undefined,
): FaultSpec | undefined {
  return (tenantId === undefined ? undefined : faults.get(tenantId)) ?? faults.get(WILDCARD);
}

/** The faults a setting gives a number of, each tenant's next n requests of a kind. */
export type CountedFault = 'throttledCalls' | 'notFoundCalls' | 'openIdFailures';

export interface FaultInjector {
  /** True with the given probability, never when it is absent or 0. */
  roll(rate: number | undefined): boolean;
  /** Counts an injected fault of this kind in the stats. */
  fault(kind: string): void;
  injectTransportFault(req: IncomingMessage, res: ServerResponse, f: FaultSpec): boolean;
  /**
   * True when `f` has one of its `key` faults left for this tenant, and counts it. Each tenant counts down
   * its own n, of a WILDCARD setting too; a setting set again counts from its n again.
   */
  takeCounted(f: FaultSpec, key: CountedFault, tenantId: string): boolean;
}

/**
 * The faults a request may be answered with; a response left hanging is added to `hanging` (destroyed on
 * close) until it closes.
 */
export function createFaultInjector(
  rng: Rng,
  tracker: StatsTracker,
  hanging: Set<ServerResponse>,
): FaultInjector {
  const roll = (rate: number | undefined): boolean => rate !== undefined && rate > 0 && rng.next() < rate;
  const fault = (kind: string): void => tracker.fault(kind);
  /** The counted faults taken, by setting (a new one starts from none), then by tenant and kind. */
  const taken = new WeakMap<FaultSpec, Map<string, number>>();
  const takeCounted = (f: FaultSpec, key: CountedFault, tenantId: string): boolean => {
    let counts = taken.get(f);
    if (!counts) taken.set(f, (counts = new Map()));
    const id = `${tenantId} ${key}`;
    const n = counts.get(id) ?? 0;
    if (n >= (f[key] ?? 0)) return false;
    counts.set(id, n + 1);
    return true;
  };

  /**
   * Timeout (never answer), connection reset or a body that never ends; true when one was injected and the
   * request is handled.
   */
  const injectTransportFault = (req: IncomingMessage, res: ServerResponse, f: FaultSpec): boolean => {
    if (roll(f.timeoutRate)) {
      fault('timeout');
      hanging.add(res);
      res.once('close', () => hanging.delete(res));
      return true;
    }
    if (roll(f.resetRate)) {
      fault('reset');
      req.socket.destroy();
      return true;
    }
    if (roll(f.slowBodyRate)) {
      fault('slowBody');
      hanging.add(res);
      res.writeHead(200, { 'Content-Type': 'application/json; odata.metadata=minimal' });
      const body = Buffer.from('{"value":[');
      let sent = 0;
      // Spaces once the opening is out: still valid JSON so far, and never the end of it.
      const trickle = setInterval(
        () => res.write(sent < body.length ? body.subarray(sent, ++sent) : ' '),
        100,
      );
      res.once('close', () => {
        clearInterval(trickle);
        hanging.delete(res);
      });
      return true;
    }
    return false;
  };

  return { roll, fault, injectTransportFault, takeCounted };
}

import type { StatsSample } from '../src/simulator';

/** A sample of the simulator's counters at `t`: `vulnerabilities` calls answered, `inFlight` in flight. */
export const sample = (t: number, vulnerabilities: number, inFlight: number): StatsSample => ({
  t,
  vulnerabilities,
  inFlight,
  machines: 0,
  bulk: 0,
  token: 0,
  throttled: 0,
});

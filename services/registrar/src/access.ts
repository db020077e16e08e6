import { type DefenderClientDeps, createDefenderClient } from '@urs/defender';
import type { AccessChecker } from './http/tenants';

/**
 * What every check's Defender client shares with the process: the pipeline's call slots, the tenants'
 * quotas (shared with the pollers and fetchers), the agent, the logger and the metrics.
 */
export type AccessCheckerDeps = Required<
  Pick<
    DefenderClientDeps,
    'limiter' | 'quota' | 'logger' | 'overrides' | 'httpsAgent' | 'metrics' | 'requestTimeoutMs'
  >
> &
  Pick<DefenderClientDeps, 'tokenRequestTimeoutMs'>;

/**
 * The `/defender/test` check against Microsoft: a Defender client of the tenant's, for the check only,
 * sharing the call slots and the tenant's quota with the pollers and fetchers. It waits for the quota, or
 * out a 429, only as long as what is left of its time limit: a tenant held back longer is answered at once,
 * in words an administrator can act on (whose calls, and for how long).
 */
export function createAccessChecker(deps: AccessCheckerDeps): AccessChecker {
  return async (tenant, signal, deadline) => {
    const { region, vulnerabilityMode, ...rest } = tenant;
    const client = createDefenderClient(region === null ? rest : { ...rest, region }, {
      ...deps,
      deadline,
    });
    try {
      return await client.checkAccess(signal, vulnerabilityMode === undefined ? {} : { vulnerabilityMode });
    } finally {
      client.close();
    }
  };
}

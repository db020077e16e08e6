import type { IncomingMessage, ServerResponse } from 'node:http';
import { handleJwks, handleOpenIdConfiguration, handleToken, sendAadError, type EntraDeps } from './entra';
import { faultsFor, type FaultInjector } from './fault-injector';
import type { FaultSpec, TenantState } from './state';

export interface EntraRouteDeps {
  /** The simulator's tenants, by lower-case id. */
  tenants: Map<string, TenantState>;
  /** The faults set, by lower-case tenant id or WILDCARD. */
  faults: Map<string, FaultSpec>;
  entra: EntraDeps;
  injector: FaultInjector;
  /** The configured latency, or undefined when there is none. */
  delay: () => Promise<void> | undefined;
  count: (kind: string, tenantId: string | undefined, res: ServerResponse) => void;
  enterTenant: (res: ServerResponse, tenantId: string) => void;
}

/**
 * Entra ID's endpoints (OpenID configuration, keys, tokens v1 and v2) and their faults; resolves false for a
 * request that is none of them.
 */
export function createEntraRoute(
  deps: EntraRouteDeps,
): (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean> {
  const { tenants, faults, entra, delay, count, enterTenant } = deps;
  const { roll, fault, injectTransportFault, takeCounted } = deps.injector;

  async function handleEntra(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> {
    const segments = url.pathname.split('/').filter((s) => s.length > 0);
    const tenantSegment = segments[0] ?? '';
    const rest = segments.slice(1).join('/').toLowerCase();
    let kind: string;
    if (
      req.method === 'GET' &&
      (rest === 'v2.0/.well-known/openid-configuration' || rest === '.well-known/openid-configuration')
    )
      kind = 'openid';
    else if (req.method === 'GET' && (rest === 'discovery/v2.0/keys' || rest === 'discovery/keys'))
      kind = 'jwks';
    else if (req.method === 'POST' && rest === 'oauth2/v2.0/token') kind = 'token';
    else if (req.method === 'POST' && rest === 'oauth2/token') kind = 'tokenV1';
    else return false;
    const tenant = tenants.get(decodeURIComponent(tenantSegment).toLowerCase());
    count(kind === 'tokenV1' ? 'token' : kind, tenant?.id, res);
    if (tenant) enterTenant(res, tenant.id);
    await delay();
    const f = faultsFor(faults, tenant?.id);
    if (kind === 'token' || kind === 'tokenV1') {
      if (f?.tokenThrottleRetryAfterSec !== undefined) {
        fault('429');
        sendAadError(
          entra,
          req,
          res,
          429,
          'temporarily_unavailable',
          50196,
          'The server terminated an operation because it encountered a client request loop.',
          { 'Retry-After': String(f.tokenThrottleRetryAfterSec) },
        );
        return true;
      }
      if (f?.tokenEndpoint && injectTransportFault(req, res, { ...f, slowBodyRate: 0 })) return true;
      if (f?.tokenEndpoint && roll(f.status5xxRate)) {
        fault('5xx');
        sendAadError(
          entra,
          req,
          res,
          503,
          'temporarily_unavailable',
          50000,
          'There was an error issuing a token or an issue with our sign-in service.',
        );
        return true;
      }
    }
    if (kind === 'openid') {
      if (tenant && f && takeCounted(f, 'openIdFailures', tenant.id)) {
        fault('openIdReset');
        req.socket.destroy();
        return true;
      }
      handleOpenIdConfiguration(entra, req, res, tenantSegment);
    } else if (kind === 'jwks') handleJwks(entra, res);
    else await handleToken(entra, req, res, tenantSegment, kind === 'token' ? 2 : 1);
    return true;
  }

  return handleEntra;
}

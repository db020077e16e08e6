import type { IncomingMessage, ServerResponse } from 'node:http';
import { WILDCARD, type FaultInjector } from './fault-injector';
import {
  bulkVulnerabilities,
  getMachine,
  listMachines,
  machineVulnerabilities,
  mdeError,
  send,
  type Reply,
} from './mde';
import type { QuotaKind } from './quota';
import type { Rng } from './rng';
import type { FaultSpec, TenantState } from './state';
import type { StatsTracker } from './tracker';
import { MDE_AUDIENCES, type AccessClaims, type TokenSigner } from './tokens';
import { exportFilesList, type SasSigner } from './tvmexport';

export interface MdeRouteDeps {
  /** The simulator's tenants, by lower-case id. */
  tenants: Map<string, TenantState>;
  /** The faults set, by lower-case tenant id or WILDCARD. */
  faults: Map<string, FaultSpec>;
  signer: TokenSigner;
  /** Signs the export files' SAS URLs. */
  sas: SasSigner;
  tracker: StatsTracker;
  rng: Rng;
  injector: FaultInjector;
  baseUrl: () => string;
  /** Whether the quotas are on, as setQuotas left them. */
  quotasOn: () => boolean;
  /** The configured latency, or undefined when there is none. */
  delay: () => Promise<void> | undefined;
  count: (kind: string, tenantId: string | undefined, res: ServerResponse) => void;
  enterTenant: (res: ServerResponse, tenantId: string) => void;
}

const REQUIRED_ROLES: Record<QuotaKind, string[]> = {
  machines: ['Machine.Read.All', 'Machine.ReadWrite.All'],
  vulnerabilities: ['Vulnerability.Read.All'],
  bulk: ['Vulnerability.Read.All'],
  exportFiles: ['Vulnerability.Read.All'],
};

/** The Defender for Endpoint API (`/api/…`): its bearer tokens, roles, quotas, faults and answers. */
export function createMdeRoute(
  deps: MdeRouteDeps,
): (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void> {
  const { tenants, faults, signer, sas, tracker, rng, delay, count, enterTenant } = deps;
  const { roll, fault, injectTransportFault } = deps.injector;

  /** Validates the bearer token like MDE: 401 when missing, forged or expired. */
  const authenticate = (req: IncomingMessage): AccessClaims | Reply => {
    const header = req.headers.authorization;
    if (!header || !/^Bearer /i.test(header))
      return mdeError(401, 'Unauthorized', 'Unauthorized (missing authorization header).');
    const claims = signer.verify(header.slice(7).trim());
    if (!claims || !MDE_AUDIENCES.has(claims.aud))
      return mdeError(401, 'Unauthorized', 'Unauthorized (invalid authorization header).');
    if (claims.exp <= Math.floor(Date.now() / 1000))
      return mdeError(401, 'Unauthorized', 'Unauthorized (expired authorization header).');
    if (!tenants.has(claims.tid)) return mdeError(401, 'Unauthorized', 'Unauthorized (unknown tenant).');
    return claims;
  };

  async function handleMde(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const path = url.pathname;
    const segments = path.split('/').filter((s) => s.length > 0);
    // segments[0] === 'api'
    let kind: string;
    let quota: QuotaKind;
    if (segments.length === 2 && segments[1] === 'machines') [kind, quota] = ['machines', 'machines'];
    else if (segments.length === 3 && segments[2]?.toLowerCase() === 'softwarevulnerabilitiesbymachine')
      [kind, quota] = ['bulk', 'bulk'];
    else if (segments.length === 3 && segments[2]?.toLowerCase() === 'softwarevulnerabilitiesexport')
      [kind, quota] = ['exportFiles', 'exportFiles'];
    else if (segments.length === 3 && segments[1] === 'machines') [kind, quota] = ['machine', 'machines'];
    else if (segments.length === 4 && segments[1] === 'machines' && segments[3] === 'vulnerabilities')
      [kind, quota] = ['vulnerabilities', 'vulnerabilities'];
    else {
      count('other', undefined, res);
      send(res, mdeError(404, 'NotFound', `Resource ${path} was not found.`), false);
      return;
    }
    if (req.method !== 'GET') {
      count(kind, undefined, res);
      send(
        res,
        mdeError(
          405,
          'MethodNotAllowed',
          `The requested resource does not support http method '${req.method ?? ''}'.`,
        ),
        false,
      );
      return;
    }
    const auth = authenticate(req);
    if ('status' in auth) {
      count(kind, undefined, res);
      await delay();
      send(res, { ...auth, headers: { 'WWW-Authenticate': 'Bearer' } }, false);
      return;
    }
    const tenantId = auth.tid;
    const tenant = tenants.get(tenantId) as TenantState;
    count(kind, tenantId, res);
    enterTenant(res, tenantId);
    await delay();

    const required = REQUIRED_ROLES[quota];
    if (!required.some((role) => auth.roles?.includes(role))) {
      send(
        res,
        mdeError(
          403,
          'Forbidden',
          `The application does not have any of the required application permissions (${required.join(', ')}) to access the resource.`,
        ),
        false,
      );
      return;
    }
    const f = faults.get(tenantId) ?? faults.get(WILDCARD) ?? {};
    if (f.disabledFeature?.includes(quota)) {
      fault('disabledFeature');
      send(res, mdeError(403, 'DisabledFeature', "Tenant feature isn't enabled."), false);
      return;
    }
    if (deps.quotasOn()) {
      const waitSec = (tenant.quotas.get(quota) as { tryAcquire(now: number): number }).tryAcquire(
        Date.now(),
      );
      if (waitSec > 0) {
        tracker.throttled(tenantId);
        send(
          res,
          mdeError(429, 'TooManyRequests', `API calls quota exceeded! Retry in ${waitSec} seconds.`, {
            'Retry-After': waitSec,
          }),
          false,
        );
        return;
      }
    }
    if (injectTransportFault(req, res, f)) return;
    if (roll(f.status5xxRate)) {
      fault('5xx');
      const unavailable = rng.next() < 0.5;
      send(
        res,
        unavailable
          ? mdeError(503, 'ServiceUnavailable', 'Service is temporarily unavailable.')
          : mdeError(500, 'InternalServerError', ''),
        false,
      );
      return;
    }
    const shortPage = kind === 'machines' && roll(f.shortPageRate);
    const malformed = roll(f.malformedRate);
    let reply: Reply;
    if (kind === 'machines') reply = listMachines(deps.baseUrl(), tenant, url.searchParams, shortPage);
    else if (kind === 'machine')
      reply = getMachine(deps.baseUrl(), tenant, decodeURIComponent(segments[2] as string));
    else if (kind === 'vulnerabilities')
      reply = machineVulnerabilities(deps.baseUrl(), tenant, decodeURIComponent(segments[2] as string));
    else if (kind === 'exportFiles') reply = exportFilesList(deps.baseUrl(), tenant, url.searchParams, sas);
    else reply = bulkVulnerabilities(deps.baseUrl(), tenant, url.searchParams);
    if (shortPage) fault('shortPage');
    if (malformed && reply.status === 200) fault('malformed');
    await send(res, reply, malformed && reply.status === 200);
  }

  return handleMde;
}

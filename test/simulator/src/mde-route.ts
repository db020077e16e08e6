import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { faultsFor, type FaultInjector } from './fault-injector';
import { acceptsGzip } from './http';
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
import {
  type FaultSpec,
  type FiveXxBody,
  type GatewayBody,
  type RetryAfterStyle,
  type TenantState,
  quotaOf,
} from './state';
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

/** A 429's Retry-After for a wait of `waitSec`, as `style` writes it (none at all for 'none'). */
function retryAfterHeaders(
  style: RetryAfterStyle | undefined,
  waitSec: number,
): Record<string, string | number> {
  if (style === 'none') return {};
  // An HTTP date has whole seconds: rounded up, so the date is never sooner than the wait.
  if (style === 'httpDate')
    return { 'Retry-After': new Date(Math.ceil((Date.now() + waitSec * 1000) / 1000) * 1000).toUTCString() };
  return { 'Retry-After': waitSec };
}

/** An answer of the front end before the service (a gateway, proxy or firewall): its own body, not MDE's JSON. */
function gatewayAnswer(status: number, body: GatewayBody): Reply {
  if (body === 'empty') return { status, body: undefined, raw: '' };
  const title = `${status} ${STATUS_CODES[status] ?? 'Error'}`;
  return {
    status,
    body: undefined,
    raw:
      `<!DOCTYPE html>\r\n<html>\r\n<head><title>${title}</title></head>\r\n<body>\r\n` +
      `<center><h1>${title}</h1></center>\r\n<hr><center>Microsoft-Azure-Application-Gateway/v2</center>\r\n` +
      `</body>\r\n</html>\r\n${'<!-- a padding to disable MSIE and Chrome friendly error page -->\r\n'.repeat(6)}`,
    headers: { 'Content-Type': 'text/html' },
  };
}

/** A 5xx of the status5xxRate fault, its body as `body` asks: a gateway's in front of a failing service, or MDE's. */
function fiveXx(status: number, body: FiveXxBody | undefined): Reply {
  if (body === 'empty' || body === 'html') return gatewayAnswer(status, body);
  if (status === 503) return mdeError(503, 'ServiceUnavailable', 'Service is temporarily unavailable.');
  return mdeError(status, 'InternalServerError', '');
}

/** The Defender for Endpoint API (`/api/…`): its bearer tokens, roles, quotas, faults and answers. */
export function createMdeRoute(
  deps: MdeRouteDeps,
): (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void> {
  const { tenants, faults, signer, sas, tracker, rng, delay, count, enterTenant } = deps;
  const { roll, fault, injectTransportFault, takeCounted } = deps.injector;

  /** Validates the bearer token like MDE: 401 when missing, forged or expired. */
  const authenticate = (req: IncomingMessage): AccessClaims | Reply => {
    const header = req.headers.authorization;
    if (!header || !/^Bearer /i.test(header))
      return mdeError(401, 'Unauthorized', 'Unauthorized (missing authorization header).');
    const claims = signer.verify(header.slice(7).trim());
    if (!claims) return mdeError(401, 'Unauthorized', 'Unauthorized (invalid authorization header).');
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
    const f = faultsFor(faults, tenantId) ?? {};
    const gzip = f.gzip === true && acceptsGzip(req);
    // Counted as a fault, so a test can tell its client's answers were gzipped.
    if (gzip) fault('gzip');
    /** The tenant's answer, gzipped and paced as its faults say. */
    const answer = (reply: Reply, malformed = false): Promise<void> | void =>
      send(res, reply, malformed, gzip, f.bodyBytesPerSec);

    if (f.gateway403) {
      fault('gateway403');
      send(res, gatewayAnswer(403, f.gateway403), false, gzip);
      return;
    }
    if (f.gateway404) {
      fault('gateway404');
      send(res, gatewayAnswer(404, f.gateway404), false, gzip);
      return;
    }
    const required = REQUIRED_ROLES[quota];
    // A token of another API (Microsoft Graph, Microsoft 365 Defender) carries none of WindowsDefenderATP's
    // roles: refused 403 like one without them, as Microsoft answers a token of another audience.
    const roles = MDE_AUDIENCES.has(auth.aud) ? (auth.roles ?? []) : [];
    if (!required.some((role) => roles.includes(role))) {
      answer(
        mdeError(
          403,
          'Forbidden',
          `Missing application roles. API required roles: ${required.join(',')}, application roles: ${roles.join(',')}.`,
        ),
      );
      return;
    }
    if (f.disabledFeature?.includes(quota)) {
      fault('disabledFeature');
      answer(mdeError(403, 'DisabledFeature', "Tenant feature isn't enabled."));
      return;
    }
    /** Microsoft's 429, asking for `waitSec` in the fault's `Retry-After` style. */
    const throttle = (waitSec: number) =>
      answer(
        mdeError(
          429,
          'TooManyRequests',
          `API calls quota exceeded! Retry in ${waitSec} seconds.`,
          retryAfterHeaders(f.retryAfter, waitSec),
        ),
      );
    if (takeCounted(f, 'throttledCalls', tenantId)) {
      fault('throttled');
      throttle(f.throttleRetryAfterSec ?? 1);
      return;
    }
    if (deps.quotasOn()) {
      // Counted per application and tenant, as Microsoft does: the token's tid and appid.
      const waitSec = quotaOf(tenant, auth.appid, quota).tryAcquire(Date.now());
      if (waitSec > 0) {
        tracker.throttled(tenantId);
        throttle(waitSec);
        return;
      }
    }
    if (takeCounted(f, 'notFoundCalls', tenantId)) {
      fault('notFound');
      answer(
        mdeError(
          404,
          'ResourceNotFound',
          kind === 'machines' ? 'No machines were found for the tenant.' : `Resource ${path} was not found.`,
        ),
      );
      return;
    }
    if (injectTransportFault(req, res, f)) return;
    if (roll(f.status5xxRate)) {
      fault('5xx');
      const statuses = f.status5xxStatuses ?? [503, 500];
      const status = statuses[
        Math.min(statuses.length - 1, Math.floor(rng.next() * statuses.length))
      ] as number;
      answer(fiveXx(status, f.status5xxBody));
      return;
    }
    const shortPage = kind === 'machines' && roll(f.shortPageRate);
    const malformed = roll(f.malformedRate);
    // The origin the paged answers' links name (see FaultSpec.nextLinkOrigin).
    const linkBase = f.nextLinkOrigin ?? deps.baseUrl();
    let reply: Reply;
    if (kind === 'machines')
      reply = listMachines(linkBase, tenant, url.searchParams, shortPage, f.pastEndPage);
    else if (kind === 'machine')
      reply = getMachine(deps.baseUrl(), tenant, decodeURIComponent(segments[2] as string));
    else if (kind === 'vulnerabilities')
      reply = machineVulnerabilities(deps.baseUrl(), tenant, decodeURIComponent(segments[2] as string));
    else if (kind === 'exportFiles') reply = exportFilesList(deps.baseUrl(), tenant, url.searchParams, sas);
    else reply = bulkVulnerabilities(linkBase, tenant, url.searchParams);
    if (shortPage) fault('shortPage');
    if (malformed && reply.status === 200) fault('malformed');
    await answer(reply, malformed && reply.status === 200);
  }

  return handleMde;
}

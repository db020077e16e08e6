import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createTlsMaterial } from './certs';
import { handleControl, type ControlTarget } from './control';
import { handleJwks, handleOpenIdConfiguration, handleToken, sendAadError, type EntraDeps } from './entra';
import { sendJson } from './http';
import {
  bulkVulnerabilities,
  deviceRowsJson,
  getMachine,
  listMachines,
  machineVulnerabilities,
  mdeError,
  send,
  type Reply,
} from './mde';
import type { QuotaKind } from './quota';
import { Rng } from './rng';
import { validateLatency, type Simulator, type SimulatorOptions } from './api';
import { createTenant, validateFaults, type FaultSpec, type TenantState } from './state';
import { StatsTracker } from './tracker';
import { MDE_AUDIENCES, TokenSigner, type AccessClaims } from './tokens';
import {
  EXPORT_PATH_PREFIX,
  exportFilesList,
  handleExportDownload,
  SasSigner,
  type DownloadDeps,
} from './tvmexport';

const WILDCARD = '*';

/** SimulatorOptions.publicUrl, checked to be `https://host[:port]` and nothing more. */
function checkedPublicUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`publicUrl must be an https URL, got '${text}'`);
  }
  if (
    url.protocol !== 'https:' ||
    url.username ||
    url.password ||
    url.search ||
    url.hash ||
    url.pathname !== '/'
  )
    throw new Error(`publicUrl must be https://<host>[:<port>] and nothing more, got '${text}'`);
  return url;
}

export async function startSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  const publicUrl = options.publicUrl === undefined ? undefined : checkedPublicUrl(options.publicUrl);
  // An IPv6 host comes bracketed from the URL; the certificate names the address itself.
  const tls = createTlsMaterial(publicUrl ? [publicUrl.hostname.replace(/^\[(.*)\]$/, '$1')] : []);
  const caDir = resolve(options.caDir ?? mkdtempSync(join(tmpdir(), 'urs-sim-')));
  mkdirSync(caDir, { recursive: true });
  const caFile = join(caDir, 'ca.pem');
  writeFileSync(caFile, tls.caPem);

  const signer = new TokenSigner();
  // Signs the export files' SAS URLs; a new key per server, so URLs of another run never validate.
  const sas = new SasSigner();
  const tenants = new Map<string, TenantState>();
  const cacheBudget = { remaining: options.recordCacheSize ?? 250_000 };
  const exportBudget = { remaining: options.exportCacheSize ?? 100_000 };
  const faults = new Map<string, FaultSpec>();
  const rng = new Rng(options.seed ?? 1, 0xfa017);
  let latency = validateLatency(options.latency ?? { meanMs: 0 });
  let quotasOn = options.quotas ?? true;
  let tokenLifetimeSec = options.tokenLifetimeSec ?? 3599;
  let baseUrl = '';
  const hanging = new Set<ServerResponse>();
  // eslint-disable-next-line prefer-const -- assigned once the server listens; handlers only run after that
  let api: Simulator;

  const tenantOrThrow = (id: string): TenantState => {
    const tenant = tenants.get(id.toLowerCase());
    if (!tenant) throw new Error(`unknown tenant '${id}'`);
    return tenant;
  };

  const tracker = new StatsTracker();
  const count = (kind: string, tenantId: string | undefined, res: ServerResponse): void =>
    tracker.call(kind, tenantId, res);
  const enterTenant = (res: ServerResponse, tenantId: string): void => tracker.enterTenant(res, tenantId);

  const delay = (): Promise<void> | undefined => {
    const jitter = latency.jitterMs ?? 0;
    const ms = Math.max(0, latency.meanMs + (jitter > 0 ? (rng.next() * 2 - 1) * jitter : 0));
    return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : undefined;
  };

  const entra: EntraDeps = {
    baseUrl: () => baseUrl,
    tenant: (id) => tenants.get(id.toLowerCase()),
    signer,
    tokenLifetimeSec: () => tokenLifetimeSec,
  };

  const downloads: DownloadDeps = {
    tenant: (id) => tenants.get(id.toLowerCase()),
    signer: sas,
    count,
    enterTenant,
  };

  const roll = (rate: number | undefined): boolean => rate !== undefined && rate > 0 && rng.next() < rate;
  const fault = (kind: string): void => tracker.fault(kind);

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

  const REQUIRED_ROLES: Record<QuotaKind, string[]> = {
    machines: ['Machine.Read.All', 'Machine.ReadWrite.All'],
    vulnerabilities: ['Vulnerability.Read.All'],
    bulk: ['Vulnerability.Read.All'],
    exportFiles: ['Vulnerability.Read.All'],
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
    if (quotasOn) {
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
    if (kind === 'machines') reply = listMachines(baseUrl, tenant, url.searchParams, shortPage);
    else if (kind === 'machine')
      reply = getMachine(baseUrl, tenant, decodeURIComponent(segments[2] as string));
    else if (kind === 'vulnerabilities')
      reply = machineVulnerabilities(baseUrl, tenant, decodeURIComponent(segments[2] as string));
    else if (kind === 'exportFiles') reply = exportFilesList(baseUrl, tenant, url.searchParams, sas);
    else reply = bulkVulnerabilities(baseUrl, tenant, url.searchParams);
    if (shortPage) fault('shortPage');
    if (malformed && reply.status === 200) fault('malformed');
    await send(res, reply, malformed && reply.status === 200);
  }

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
    if (kind === 'token' || kind === 'tokenV1') {
      const f = (tenant && faults.get(tenant.id)) ?? faults.get(WILDCARD);
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
      const f = tenant && faults.get(tenant.id);
      if (f?.openIdFailures) {
        f.openIdFailures--;
        fault('openIdReset');
        req.socket.destroy();
        return true;
      }
      handleOpenIdConfiguration(entra, req, res, tenantSegment);
    } else if (kind === 'jwks') handleJwks(entra, res);
    else await handleToken(entra, req, res, tenantSegment, kind === 'token' ? 2 : 1);
    return true;
  }

  // The control API drives the same methods as the library API (api is assigned before listening).
  const control = (): ControlTarget => ({
    ...api,
    machinesPageJson: (t, skip, top) => tenantOrThrow(t).fleet.sliceJson(skip, top),
    tenants: () =>
      [...tenants.values()].map((t) => ({
        azureTenantId: t.id,
        machines: t.fleet.size(),
        apps: [...t.apps.values()].map((a) => a.clientId),
      })),
    info: () => ({ baseUrl, caFile, quotas: quotasOn, latency, tokenLifetimeSec }),
  });

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'https://sim.invalid');
    if (url.pathname.startsWith('/_sim/')) {
      handleControl(control(), req, res, url).catch((err: unknown) =>
        sendJson(res, 500, { error: String(err) }),
      );
      return;
    }
    tracker.enter(res);
    let work: Promise<void>;
    if (url.pathname.startsWith('/api/')) work = handleMde(req, res, url);
    // An export file's SAS URL: no bearer token, no MDE quota.
    else if (url.pathname.startsWith(EXPORT_PATH_PREFIX))
      work = handleExportDownload(downloads, req, res, url);
    else
      work = handleEntra(req, res, url).then((handled) => {
        if (!handled) {
          count('other', undefined, res);
          sendJson(res, 404, {
            error: { code: 'NotFound', message: `No route for ${req.method ?? ''} ${url.pathname}` },
          });
        }
      });
    work.catch((err: unknown) => {
      if (!res.headersSent) send(res, mdeError(500, 'InternalServerError', String(err)), false);
    });
  };

  const server: Server = createServer({ key: tls.keyPem, cert: tls.certPem }, onRequest);
  server.keepAliveTimeout = 30_000;
  server.headersTimeout = 35_000;
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  baseUrl = publicUrl ? publicUrl.origin : `https://${host.includes(':') ? `[${host}]` : host}:${port}`;

  api = {
    baseUrl,
    port,
    caPem: tls.caPem,
    caFile,
    addTenant(spec) {
      const tenant = createTenant(spec, Date.now(), cacheBudget, exportBudget);
      if (tenants.has(tenant.id)) throw new Error(`tenant '${spec.azureTenantId}' already exists`);
      tenant.fleet.warm((record) => deviceRowsJson(tenant, record));
      tenants.set(tenant.id, tenant);
    },
    removeTenant(id) {
      const tenant = tenants.get(id.toLowerCase());
      tenant?.fleet.dispose();
      return tenants.delete(id.toLowerCase());
    },
    setFaults(id, spec) {
      const valid = validateFaults(spec);
      faults.set(id === WILDCARD ? WILDCARD : id.toLowerCase(), valid);
    },
    setLatency(l) {
      latency = validateLatency(l);
    },
    setQuotas(on) {
      quotasOn = on;
    },
    setTokenLifetime(seconds) {
      if (!Number.isInteger(seconds) || seconds < 1)
        throw new Error(`tokenLifetimeSec must be a positive integer, got ${String(seconds)}`);
      tokenLifetimeSec = seconds;
    },
    updateMachine(t, id, patch) {
      if (!tenantOrThrow(t).fleet.update(id.toLowerCase(), patch))
        throw new Error(`unknown machine '${id}' in tenant '${t}'`);
    },
    removeMachine(t, id) {
      if (!tenantOrThrow(t).fleet.remove(id.toLowerCase()))
        throw new Error(`unknown machine '${id}' in tenant '${t}'`);
    },
    addMachines(t, what) {
      const fleet = tenantOrThrow(t).fleet;
      if (typeof what === 'number') return fleet.addGenerated(what);
      for (const record of what) fleet.addRecord(record);
      return what.map((r) => r.id);
    },
    setVulnerabilities(t, id, vulns) {
      if (!tenantOrThrow(t).fleet.setVulnerabilities(id.toLowerCase(), vulns))
        throw new Error(`unknown machine '${id}' in tenant '${t}'`);
    },
    machines: (t) => tenantOrThrow(t).fleet.all(),
    machineCount: (t) => tenantOrThrow(t).fleet.size(),
    vulnerabilities(t, id) {
      const vulns = tenantOrThrow(t).fleet.vulnerabilities(id.toLowerCase());
      if (!vulns) throw new Error(`unknown machine '${id}' in tenant '${t}'`);
      return vulns;
    },
    stats: () => tracker.snapshot(),
    resetStats: () => tracker.reset(),
    async close() {
      for (const res of hanging) res.destroy();
      hanging.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
  return api;
}

import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type CaMaterial, createCa, createTlsMaterial, isUsableCa } from './certs';
import { handleControl, type ControlTarget } from './control';
import type { EntraDeps } from './entra';
import { createEntraRoute } from './entra-route';
import { createFaultInjector, WILDCARD } from './fault-injector';
import { sendJson } from './http';
import { deviceRowsJson, mdeError, send } from './mde';
import { createMdeRoute } from './mde-route';
import { checkedPublicUrl } from './public-url';
import { Rng } from './rng';
import { validateLatency, type Simulator, type SimulatorOptions } from './api';
import { createTenant, validateFaults, type FaultSpec, type TenantState } from './state';
import { StatsTracker } from './tracker';
import { TokenSigner } from './tokens';
import { EXPORT_PATH_PREFIX, handleExportDownload, SasSigner, type DownloadDeps } from './tvmexport';

/**
 * The CA of `caDir` and `keyDir`: the one an earlier start wrote there (ca.pem, and ca-key.pem in `keyDir`),
 * while it is usable, so that clients that trusted its ca.pem (Docker stages started earlier,
 * NODE_EXTRA_CA_CERTS) keep reaching a simulator started again; else a new one, written there (the key
 * readable by its owner only).
 */
function caOf(caDir: string, keyDir: string): CaMaterial {
  const caFile = join(caDir, 'ca.pem');
  const keyFile = join(keyDir, 'ca-key.pem');
  // A key an earlier start left beside ca.pem, where clients read: it goes once the key is kept elsewhere.
  if (keyDir !== caDir) rmSync(join(caDir, 'ca-key.pem'), { force: true });
  const kept = readCa(caFile, keyFile);
  if (kept !== undefined && isUsableCa(kept)) return kept;
  const ca = createCa();
  mkdirSync(caDir, { recursive: true });
  mkdirSync(keyDir, { recursive: true, mode: 0o700 });
  // Removed first, as a file that exists keeps its mode; the key before ca.pem: a start cut between the two
  // leaves a pair the next start refuses and replaces.
  rmSync(keyFile, { force: true });
  writeFileSync(keyFile, ca.caKeyPem, { mode: 0o600 });
  writeFileSync(caFile, ca.caPem);
  return ca;
}

function readCa(caFile: string, keyFile: string): CaMaterial | undefined {
  try {
    return { caPem: readFileSync(caFile, 'utf8'), caKeyPem: readFileSync(keyFile, 'utf8') };
  } catch {
    return undefined;
  }
}

export async function startSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  const publicUrl = options.publicUrl === undefined ? undefined : checkedPublicUrl(options.publicUrl);
  const caDir = resolve(options.caDir ?? mkdtempSync(join(tmpdir(), 'urs-sim-')));
  const caKeyDir = options.caKeyDir === undefined ? caDir : resolve(options.caKeyDir);
  const caFile = join(caDir, 'ca.pem');
  // An IPv6 host comes bracketed from the URL; the certificate names the address itself.
  const tls = createTlsMaterial(
    publicUrl ? [publicUrl.hostname.replace(/^\[(.*)\]$/, '$1')] : [],
    caOf(caDir, caKeyDir),
  );

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
  const quotaMinuteMs = options.quotaMinuteMs ?? 60_000;
  if (!Number.isInteger(quotaMinuteMs) || quotaMinuteMs < 1_000 || quotaMinuteMs > 60_000)
    throw new Error(`quotaMinuteMs must be an integer 1000..60000, got ${String(quotaMinuteMs)}`);
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

  const injector = createFaultInjector(rng, tracker, hanging);
  const handleMde = createMdeRoute({
    tenants,
    faults,
    signer,
    sas,
    tracker,
    rng,
    injector,
    baseUrl: () => baseUrl,
    quotasOn: () => quotasOn,
    delay,
    count,
    enterTenant,
  });
  const handleEntra = createEntraRoute({ tenants, faults, entra, injector, delay, count, enterTenant });

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
      handleControl(control(), req, res, url).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, { error: String(err) });
        else res.destroy();
      });
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
      // Failed once the answer had begun: cut off, never left open for the client to wait on.
      else res.destroy();
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
      const tenant = createTenant(spec, Date.now(), cacheBudget, exportBudget, quotaMinuteMs);
      if (tenants.has(tenant.id)) throw new Error(`tenant '${spec.azureTenantId}' already exists`);
      tenant.fleet.warm((record, view) => deviceRowsJson(view, record));
      tenants.set(tenant.id, tenant);
    },
    removeTenant(id) {
      const tenant = tenants.get(id.toLowerCase());
      tenant?.fleet.dispose();
      return tenants.delete(id.toLowerCase());
    },
    setFaults(id, spec) {
      const valid = validateFaults(spec);
      const key = id === WILDCARD ? WILDCARD : id.toLowerCase();
      // No setting at all clears the tenant's own, so the WILDCARD one applies to it again.
      if (Object.keys(valid).length === 0) faults.delete(key);
      else faults.set(key, valid);
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
    generateExport: (t) => tenantOrThrow(t).fleet.generateHeldBack(),
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

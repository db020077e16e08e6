import type { IncomingMessage, ServerResponse } from 'node:http';
import { jsonArrayParts, readBody, sendJson, sendParts } from './http';
import { MACHINES_PER_PART } from './mde';
import type { FaultSpec, SimStats, TenantSpec } from './state';
import type { MachineRecord, VulnerabilityRecord } from './types';

// JSON control API under /_sim/ on the same server, for tests, demos and benchmarks running in other
// processes. It is not part of Microsoft's surface and is not counted in statistics.
//
//   GET    /_sim/info                                   baseUrl, caFile, quotas, latency, tokenLifetimeSec
//   GET    /_sim/tenants                                tenants with device counts
//   POST   /_sim/tenants                                body TenantSpec → 201
//   DELETE /_sim/tenants/{tenant}
//   POST   /_sim/tenants/{tenant}/export                the export snapshot held back, made now → { generatedAtMs }
//   GET    /_sim/tenants/{tenant}/machines?skip=&top=   { count, value }  (top default: all)
//   POST   /_sim/tenants/{tenant}/machines              body { count } | { records: MachineRecord[] } → { ids }
//   PATCH  /_sim/tenants/{tenant}/machines/{id}         body partial MachineRecord
//   DELETE /_sim/tenants/{tenant}/machines/{id}
//   GET    /_sim/tenants/{tenant}/machines/{id}/vulnerabilities
//   PUT    /_sim/tenants/{tenant}/machines/{id}/vulnerabilities   body VulnerabilityRecord[]
//   PUT    /_sim/faults/{tenant|*}                      body FaultSpec
//   PUT    /_sim/latency                                body { meanMs, jitterMs? }
//   PUT    /_sim/quotas                                 body { enabled: boolean }
//   PUT    /_sim/token-lifetime                         body { seconds }
//   GET    /_sim/stats ;  POST /_sim/stats/reset

export interface ControlTarget {
  addTenant(spec: TenantSpec): void;
  removeTenant(id: string): boolean;
  setFaults(id: string, faults: FaultSpec): void;
  setLatency(latency: { meanMs: number; jitterMs?: number }): void;
  setQuotas(enabled: boolean): void;
  setTokenLifetime(seconds: number): void;
  updateMachine(tenant: string, id: string, patch: Partial<MachineRecord>): void;
  removeMachine(tenant: string, id: string): void;
  addMachines(tenant: string, what: number | MachineRecord[]): string[];
  setVulnerabilities(tenant: string, id: string, vulns: VulnerabilityRecord[]): void;
  machineCount(tenant: string): number;
  /** Each machine of the page as its JSON. */
  machinesPageJson(tenant: string, skip: number, top: number): string[];
  vulnerabilities(tenant: string, id: string): VulnerabilityRecord[];
  /** See Simulator.generateExport. */
  generateExport(tenant: string): number;
  tenants(): unknown[];
  stats(): SimStats;
  resetStats(): void;
  info(): unknown;
}

class ControlError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function jsonBody(req: IncomingMessage): Promise<unknown> {
  const text = await readBody(req);
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new ControlError(400, 'request body must be JSON');
  }
}

function objectBody(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new ControlError(400, `${what} must be a JSON object`);
  return value as Record<string, unknown>;
}

function nonNegative(raw: string | null, name: string, fallback: number): number {
  if (raw === null) return fallback;
  if (!/^\d+$/.test(raw)) throw new ControlError(400, `${name} must be a non-negative integer`);
  return Number(raw);
}

/** An answer written in parts as they are rendered (large pages), instead of one JSON.stringify. */
class JsonParts {
  constructor(readonly parts: () => Iterable<Buffer>) {}
}

async function route(target: ControlTarget, req: IncomingMessage, url: URL): Promise<[number, unknown]> {
  const parts = url.pathname
    .split('/')
    .filter((s) => s.length > 0)
    .slice(1)
    .map(decodeURIComponent);
  const method = req.method ?? 'GET';
  const [head, tenant, sub, id, leaf] = parts;
  if (head === 'info' && method === 'GET') return [200, target.info()];
  if (head === 'stats' && parts.length === 1 && method === 'GET') return [200, target.stats()];
  if (head === 'stats' && tenant === 'reset' && method === 'POST') {
    target.resetStats();
    return [200, { ok: true }];
  }
  if (head === 'latency' && method === 'PUT') {
    target.setLatency(objectBody(await jsonBody(req), 'latency') as { meanMs: number; jitterMs?: number });
    return [200, { ok: true }];
  }
  if (head === 'quotas' && method === 'PUT') {
    const body = objectBody(await jsonBody(req), 'quotas');
    if (typeof body.enabled !== 'boolean') throw new ControlError(400, 'quotas.enabled must be a boolean');
    target.setQuotas(body.enabled);
    return [200, { ok: true }];
  }
  if (head === 'token-lifetime' && method === 'PUT') {
    target.setTokenLifetime(objectBody(await jsonBody(req), 'token-lifetime').seconds as number);
    return [200, { ok: true }];
  }
  if (head === 'faults' && tenant && method === 'PUT') {
    target.setFaults(tenant, objectBody(await jsonBody(req), 'faults') as FaultSpec);
    return [200, { ok: true }];
  }
  if (head !== 'tenants') throw new ControlError(404, `no control route ${method} ${url.pathname}`);
  if (!tenant) {
    if (method === 'GET') return [200, target.tenants()];
    if (method === 'POST') {
      target.addTenant(objectBody(await jsonBody(req), 'tenant') as unknown as TenantSpec);
      return [201, { ok: true }];
    }
  } else if (!sub) {
    if (method === 'DELETE')
      return target.removeTenant(tenant)
        ? [200, { ok: true }]
        : [404, { error: `unknown tenant '${tenant}'` }];
  } else if (sub === 'export' && !id && method === 'POST') {
    return [200, { generatedAtMs: target.generateExport(tenant) }];
  } else if (sub === 'machines' && !id) {
    if (method === 'GET') {
      const total = target.machineCount(tenant);
      const skip = nonNegative(url.searchParams.get('skip'), 'skip', 0);
      const top = nonNegative(url.searchParams.get('top'), 'top', total);
      const count = Math.max(0, Math.min(top, total - skip));
      const slice = (start: number, end: number): string[] =>
        target.machinesPageJson(tenant, skip + start, end - start);
      return [
        200,
        new JsonParts(() =>
          jsonArrayParts(`{"count":${total},"value":[`, count, slice, ']}', MACHINES_PER_PART),
        ),
      ];
    }
    if (method === 'POST') {
      const body = objectBody(await jsonBody(req), 'machines');
      if (typeof body.count === 'number') return [200, { ids: target.addMachines(tenant, body.count) }];
      if (Array.isArray(body.records))
        return [200, { ids: target.addMachines(tenant, body.records as MachineRecord[]) }];
      throw new ControlError(400, 'body must be { count: number } or { records: MachineRecord[] }');
    }
  } else if (sub === 'machines' && id && !leaf) {
    if (method === 'PATCH') {
      target.updateMachine(tenant, id, objectBody(await jsonBody(req), 'patch') as Partial<MachineRecord>);
      return [200, { ok: true }];
    }
    if (method === 'DELETE') {
      target.removeMachine(tenant, id);
      return [200, { ok: true }];
    }
  } else if (sub === 'machines' && id && leaf === 'vulnerabilities') {
    if (method === 'GET') return [200, { value: target.vulnerabilities(tenant, id) }];
    if (method === 'PUT') {
      const body = await jsonBody(req);
      if (!Array.isArray(body)) throw new ControlError(400, 'vulnerabilities must be a JSON array');
      target.setVulnerabilities(tenant, id, body as VulnerabilityRecord[]);
      return [200, { ok: true }];
    }
  }
  throw new ControlError(404, `no control route ${method} ${url.pathname}`);
}

export async function handleControl(
  target: ControlTarget,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
): Promise<void> {
  try {
    const [status, body] = await route(target, req, url);
    if (body instanceof JsonParts) await sendParts(res, status, body.parts());
    else sendJson(res, status, body);
  } catch (err) {
    const status =
      err instanceof ControlError ? err.status : /unknown (tenant|machine)/.test(String(err)) ? 404 : 400;
    sendJson(res, status, { error: err instanceof Error ? err.message : String(err) });
  }
}

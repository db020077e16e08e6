import { createServer, type Server, type ServerResponse } from 'node:http';
import { listenHttp } from './listen';
import type { Registry } from './metrics';

export interface HealthServerOptions {
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /**
   * Interface to bind. Default: every interface, IPv6 and IPv4 alike (see `listenHttp`), as the kubelet's
   * probes and Prometheus reach it on the pod's IP, which may be IPv6.
   */
  host?: string;
  registry: Registry;
  /** Whether the service can take work now (connected, assigned, not stopping). */
  isReady: () => boolean;
  /**
   * Why it is not ready, in words an operator can act on at 3 a.m. (`waiting for Kafka …`): the `reason` of
   * /readyz's 503. Asked only when `isReady` says false. Default: none given.
   */
  notReadyReason?: () => string | undefined;
  /**
   * Narrower readiness answered at `/readyz/<name>`, each a function giving why that part is not ready
   * (undefined: ready): what a load balancer in front of one part of the service asks, where the whole
   * service's readiness would take the part out of rotation while it can still answer (the registrar's REST
   * API while a consumer waits for Kafka). Default: none; other paths answer 404. Looked up at each request:
   * a part its owner adds once the server runs (when the service's setup returned) answers from then on.
   */
  parts?: Readonly<Record<string, () => string | undefined>>;
}

export interface HealthServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * `/healthz` (the process answers), `/readyz` (ready for work: 200 or 503), `/readyz/<part>` (see
 * `parts`), `/metrics` (Prometheus), where `urs_ready` says what `/readyz` would: an alert can then watch
 * readiness where only metrics are scraped.
 */
export async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  options.registry.gauge(
    'urs_ready',
    'Whether the service is ready for work (1) or not (0), as /readyz answers.',
    () => (options.isReady() ? 1 : 0),
  );
  const parts = options.parts ?? {};
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0] ?? '/';
    const name = path.startsWith(PART_READYZ) ? path.slice(PART_READYZ.length) : undefined;
    const part = name !== undefined && Object.hasOwn(parts, name) ? parts[name] : undefined;
    if (request.method !== 'GET') {
      response.writeHead(405, { allow: 'GET' }).end();
    } else if (path === '/healthz') {
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    } else if (path === '/readyz') {
      const ready = options.isReady();
      readiness(response, ready, ready ? undefined : options.notReadyReason?.());
    } else if (part) {
      const reason = part();
      readiness(response, reason === undefined, reason);
    } else if (path === '/metrics') {
      response.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(options.registry.expose());
    } else {
      response.writeHead(404).end();
    }
  });
  server.keepAliveTimeout = 5_000;
  // A probe or a scrape cut short by a stop does no harm: every connection ends at once.
  return listenHttp(server, { port: options.port, host: options.host, closeConnections: 'all' });
}

const PART_READYZ = '/readyz/';

function readiness(response: ServerResponse, ready: boolean, reason: string | undefined): void {
  response
    .writeHead(ready ? 200 : 503, { 'content-type': 'application/json' })
    .end(JSON.stringify({ status: ready ? 'ready' : 'not-ready', ...(reason ? { reason } : {}) }));
}

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ListenOptions {
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /**
   * Interface to bind. Default: every interface, as Node binds with no host: the unspecified IPv6 address
   * `::` (dual-stack, so IPv4 clients are answered too) where the machine has IPv6, `0.0.0.0` otherwise. A
   * fixed `0.0.0.0` would leave an IPv6-only pod's probes, Service and Prometheus scrape refused.
   */
  host?: string;
  /**
   * What `close()` does with open connections: `all` ends every one at once (requests in flight are cut,
   * fine for probes and scrapes); `idle` ends the idle ones, so requests in flight still get their answer.
   */
  closeConnections: 'all' | 'idle';
}

export interface ListeningServer {
  readonly port: number;
  /** Stops accepting connections and resolves once the server is closed; later calls return the same promise. */
  close(): Promise<void>;
}

/** Starts `server` listening; rejects when it cannot (e.g. the port is taken). */
export async function listenHttp(server: Server, options: ListenOptions): Promise<ListeningServer> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // No host given: Node tries `::` (not IPv6-only) and falls back to `0.0.0.0` where IPv6 is missing.
    server.listen({ port: options.port, host: options.host }, () => resolve());
  });
  let closing: Promise<void> | undefined;
  return {
    port: (server.address() as AddressInfo).port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        if (options.closeConnections === 'all') server.closeAllConnections();
        else server.closeIdleConnections();
      });
      return closing;
    },
  };
}

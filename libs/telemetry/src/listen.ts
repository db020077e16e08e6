import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ListenOptions {
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Interface to bind. Default `0.0.0.0`. */
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
    server.listen(options.port, options.host ?? '0.0.0.0', () => resolve());
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

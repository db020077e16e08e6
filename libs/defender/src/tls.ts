import { Agent } from 'node:https';
import { rootCertificates } from 'node:tls';

export interface HttpsAgentOptions {
  /**
   * PEM of extra CAs to trust besides the system ones (the simulator's CA): the in-process equivalent of
   * NODE_EXTRA_CA_CERTS, which Node reads only at process start — too late for a test that starts the
   * simulator in-process. Production leaves it unset.
   */
  extraCa?: string | string[];
  /** Sockets per host kept open. Default 16 (more than the 10 calls in flight). */
  maxSockets?: number;
}

/**
 * A keep-alive https agent for the MDE and Entra calls. One per process is enough; pass the same one to
 * every tenant's client so connections are reused across tenants of the same host.
 */
export function createHttpsAgent(options: HttpsAgentOptions = {}): Agent {
  const extra =
    options.extraCa === undefined ? [] : Array.isArray(options.extraCa) ? options.extraCa : [options.extraCa];
  return new Agent({
    keepAlive: true,
    maxSockets: options.maxSockets ?? 16,
    maxFreeSockets: options.maxSockets ?? 16,
    // Node's `ca` replaces the default trust store, so the system roots are passed along with the extras.
    ...(extra.length > 0 ? { ca: [...rootCertificates, ...extra] } : {}),
  });
}

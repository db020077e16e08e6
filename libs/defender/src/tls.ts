import { Agent } from 'node:https';
import { createSecureContext, rootCertificates } from 'node:tls';

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
    // A `ca` option replaces the default trust store, so the system roots go along with the extras. They
    // are parsed into one secure context here, once per agent: given as `ca`, the ~150 roots would be
    // joined into the agent's connection-pool key on every request and parsed again on every connection.
    ...(extra.length > 0
      ? { secureContext: createSecureContext({ ca: [...rootCertificates, ...extra] }) }
      : {}),
  });
}

import { readFileSync } from 'node:fs';
import { Agent, type AgentOptions } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createSecureContext, rootCertificates } from 'node:tls';

/**
 * TCP keep-alive probe delay of the agent's connections, ms: the value axios also sets on every request's
 * socket, so the two agree (see KeepAliveOnceAgent).
 */
const TCP_KEEPALIVE_DELAY_MS = 60_000;

/**
 * An https agent whose sockets change their TCP keep-alive setting only when it really changes. Node's agent
 * sets it each time it takes a socket back, axios each time it hands one a request: two `setsockopt`
 * system calls per call, ~3.5 % of the vuln-fetcher's CPU at 200 calls/s. Same setting, one call per
 * connection.
 */
class KeepAliveOnceAgent extends Agent {
  override createConnection(
    options: Parameters<Agent['createConnection']>[0],
    callback?: Parameters<Agent['createConnection']>[1],
  ): Duplex {
    const socket = super.createConnection(options, callback) as Socket;
    const setKeepAlive = socket.setKeepAlive;
    let current: string | undefined;
    socket.setKeepAlive = function setKeepAliveOnce(enable?: boolean, initialDelay?: number) {
      const wanted = `${String(enable ?? false)}/${initialDelay ?? 0}`;
      if (wanted === current) return this;
      current = wanted;
      return setKeepAlive.call(this, enable, initialDelay);
    };
    return socket;
  }
}

export interface HttpsAgentOptions {
  /**
   * PEM of extra CAs to trust besides the system ones (the simulator's CA): the in-process equivalent of
   * NODE_EXTRA_CA_CERTS, which Node reads only at process start — too late for a test that starts the
   * simulator in-process. Production leaves it unset.
   */
  extraCa?: string | string[];
  /** Sockets per host kept open. Default 16 (more than the 10 calls in flight). */
  maxSockets?: number;
  /** Where `NODE_EXTRA_CA_CERTS` is read when `extraCa` is given (see nodeExtraCa). Default `process.env`. */
  env?: Record<string, string | undefined>;
}

/**
 * The PEM of the file `NODE_EXTRA_CA_CERTS` names: Node adds it to its default trust store at start, and an
 * agent given its own `ca` would drop it (Node 20 has no `tls.getCACertificates` to ask for the store as it
 * is). None when it is unset, or when the file cannot be read: Node then ignores it too, with a warning of
 * its own at start.
 */
function nodeExtraCa(env: Record<string, string | undefined>): string[] {
  const file = env['NODE_EXTRA_CA_CERTS'];
  if (!file) return [];
  try {
    return [readFileSync(file, 'utf8')];
  } catch {
    return [];
  }
}

/**
 * A keep-alive https agent for the MDE and Entra calls. One per process is enough; pass the same one to
 * every tenant's client so connections are reused across tenants of the same host.
 */
export function createHttpsAgent(options: HttpsAgentOptions = {}): Agent {
  const extra =
    options.extraCa === undefined ? [] : Array.isArray(options.extraCa) ? options.extraCa : [options.extraCa];
  const agentOptions: AgentOptions = {
    keepAlive: true,
    keepAliveMsecs: TCP_KEEPALIVE_DELAY_MS,
    maxSockets: options.maxSockets ?? 16,
    maxFreeSockets: options.maxSockets ?? 16,
    // A `ca` option replaces the default trust store, so the system roots and NODE_EXTRA_CA_CERTS's CAs go
    // along with the extras. They are parsed into one secure context here, once per agent: given as `ca`,
    // the ~150 roots would be joined into the agent's connection-pool key on every request and parsed again
    // on every connection.
    ...(extra.length > 0
      ? {
          secureContext: createSecureContext({
            ca: [...rootCertificates, ...nodeExtraCa(options.env ?? process.env), ...extra],
          }),
        }
      : {}),
  };
  return new KeepAliveOnceAgent(agentOptions);
}

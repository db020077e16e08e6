import type { ClientRequest, Agent as HttpAgent } from 'node:http';
import { type Agent, globalAgent } from 'node:https';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { getProxyForUrl } from 'proxy-from-env';

type ConnectOptions = Parameters<HttpsProxyAgent<string>['connect']>[1];

/**
 * Tunnels through a proxy (CONNECT) and upgrades the tunnel to TLS with the options of the agent it stands
 * for, so the origin is trusted as that agent trusts it (its extra CAs): https-proxy-agent takes the origin's
 * TLS options from each request, and @azure/core-rest-pipeline's requests carry none.
 */
class TunnelAgent extends HttpsProxyAgent<string> {
  constructor(
    proxy: string,
    private readonly origin: Agent,
  ) {
    // The agent's options also reach the connection to the proxy (pool sizes, keep-alive, a proxy's CA).
    super(proxy, { ...origin.options });
  }

  override connect(
    req: ClientRequest,
    options: ConnectOptions,
  ): ReturnType<HttpsProxyAgent<string>['connect']> {
    return super.connect(req, { ...this.origin.options, ...options } as ConnectOptions);
  }
}

/** Per agent, its tunnel through each proxy: one pool per proxy, shared by every tenant of the process. */
const tunnels = new WeakMap<Agent, Map<string, TunnelAgent>>();

/**
 * The agent for requests to `url` that axios would send through a proxy, as axios picks it (HTTPS_PROXY, then
 * ALL_PROXY, either case; NO_PROXY honoured): a tunnel through that proxy that trusts what `agent` trusts.
 * `agent` itself when no proxy applies. For clients that skip the environment's proxy whenever they are
 * given an agent (@azure/core-rest-pipeline, hence Entra's token requests), so that they leave through the
 * same proxy as the MDE calls.
 */
export function agentThroughProxy(url: string, agent?: Agent): HttpAgent | undefined {
  const proxy = getProxyForUrl(url);
  if (!proxy) return agent;
  const origin = agent ?? globalAgent;
  let byProxy = tunnels.get(origin);
  if (!byProxy) tunnels.set(origin, (byProxy = new Map()));
  let tunnel = byProxy.get(proxy);
  if (!tunnel) byProxy.set(proxy, (tunnel = new TunnelAgent(proxy, origin)));
  return tunnel;
}

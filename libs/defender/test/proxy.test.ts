import { type Server, type Socket, connect, createServer } from 'node:net';
import type { Agent } from 'node:https';
import { type Simulator, startSimulator } from '@urs/simulator';
import { createHttpsAgent, createTokenSource, resolveEndpoints } from '../src';
import { type TestApp, newApp, simClient } from './support';

let sim: Simulator;
let app: TestApp;

/** A CONNECT proxy that records each request line and tunnels CONNECTs; anything else is refused. */
interface RecordingProxy {
  url: string;
  seen: string[];
  close(): Promise<void>;
}

async function startProxy(): Promise<RecordingProxy> {
  const seen: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    let head = '';
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      client.off('data', onData);
      const line = head.slice(0, head.indexOf('\r\n'));
      seen.push(line);
      const [method, target] = line.split(' ');
      if (method !== 'CONNECT' || !target) {
        client.end('HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      const colon = target.lastIndexOf(':');
      const origin = connect(Number(target.slice(colon + 1)), target.slice(0, colon), () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        const rest = Buffer.from(head.slice(end + 4), 'latin1');
        if (rest.length > 0) origin.write(rest);
        client.pipe(origin).pipe(client);
      });
      sockets.add(origin);
      origin.on('close', () => sockets.delete(origin));
      origin.on('error', () => client.destroy());
    };
    client.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('the proxy has no port');
  return {
    url: `http://127.0.0.1:${address.port}`,
    seen,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const PROXY_VARIABLES = [
  'HTTPS_PROXY',
  'https_proxy',
  'HTTP_PROXY',
  'http_proxy',
  'ALL_PROXY',
  'all_proxy',
  'NO_PROXY',
  'no_proxy',
];
let saved: Record<string, string | undefined>;
let proxy: RecordingProxy;

beforeAll(async () => {
  sim = await startSimulator({ quotas: false });
  app = newApp();
  sim.addTenant({ azureTenantId: app.azureTenantId, apps: [app], fleet: { size: 3, seed: 5 } });
});

afterAll(async () => {
  await sim.close();
});

beforeEach(async () => {
  saved = Object.fromEntries(PROXY_VARIABLES.map((name) => [name, process.env[name]]));
  for (const name of PROXY_VARIABLES) delete process.env[name];
  proxy = await startProxy();
  process.env.HTTPS_PROXY = proxy.url;
});

afterEach(async () => {
  for (const name of PROXY_VARIABLES) {
    if (saved[name] === undefined) delete process.env[name];
    else process.env[name] = saved[name];
  }
  await proxy.close();
});

const simHost = (): string => new URL(sim.baseUrl).host;

/** A token source of the simulator's app, its requests sent with `agent`. */
const simTokens = (agent: Agent): ReturnType<typeof createTokenSource> =>
  createTokenSource({
    endpoints: resolveEndpoints(undefined, undefined, { authorityHost: sim.baseUrl, apiBase: sim.baseUrl }),
    credentials: app,
    httpsAgent: agent,
  });

describe('createTokenSource behind a proxy', () => {
  it("getToken should ask Entra through the HTTPS_PROXY tunnel, trusting the agent's extra CA", async () => {
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    try {
      const tokens = simTokens(agent);
      const token = await tokens.getToken();
      expect(token.token).toBeTruthy();
      expect(proxy.seen).toContain(`CONNECT ${simHost()} HTTP/1.1`);
    } finally {
      agent.destroy();
    }
  });

  it('getToken should go straight to Entra when NO_PROXY names its host', async () => {
    process.env.NO_PROXY = new URL(sim.baseUrl).hostname;
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    try {
      const tokens = simTokens(agent);
      expect((await tokens.getToken()).token).toBeTruthy();
      expect(proxy.seen).toEqual([]);
    } finally {
      agent.destroy();
    }
  });
});

describe('createDefenderClient behind a proxy', () => {
  it('checkAccess should send both the token request and the API call through the proxy', async () => {
    const { client, close } = simClient(sim, app);
    try {
      const report = await client.checkAccess();
      expect(report.tokenIssued).toBe(true);
      expect(report.machinesReadable).toBe(true);
      // One tunnel for Entra (the credential's agent), one for the API (axios's).
      expect(
        proxy.seen.filter((line) => line === `CONNECT ${simHost()} HTTP/1.1`).length,
      ).toBeGreaterThanOrEqual(2);
      expect(proxy.seen.every((line) => line.startsWith('CONNECT '))).toBe(true);
    } finally {
      await close();
    }
  });
});

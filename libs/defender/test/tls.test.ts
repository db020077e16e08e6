import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Agent } from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import axios from 'axios';
import { type Simulator, startSimulator } from '@urs/simulator';
import { createHttpsAgent } from '../src';

let sim: Simulator;

beforeAll(async () => {
  sim = await startSimulator({ quotas: false });
});

afterAll(async () => {
  await sim.close();
});

/** GET on a connection of its own (`Connection: close`), so every request makes a new TLS handshake. */
function fetchInfo(agent: Agent, url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = get(url, { agent, headers: { Connection: 'close' } }, (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode ?? 0));
      response.on('error', reject);
    });
    request.on('error', reject);
  });
}

describe('createHttpsAgent', () => {
  it('createHttpsAgent should trust the extra CA and build its trust store once, not per connection', async () => {
    const contexts = jest.spyOn(tls, 'createSecureContext');
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) statuses.push(await fetchInfo(agent, `${sim.baseUrl}/_sim/info`));
      statuses.push(
        ...(await Promise.all([1, 2, 3].map(() => fetchInfo(agent, `${sim.baseUrl}/_sim/info`)))),
      );
      expect(statuses).toEqual([200, 200, 200, 200, 200, 200]);
      expect(contexts).toHaveBeenCalledTimes(1);
    } finally {
      contexts.mockRestore();
      agent.destroy();
    }
  });

  it('createHttpsAgent should still trust the system roots beside the extra CA', () => {
    const contexts = jest.spyOn(tls, 'createSecureContext');
    const agent = createHttpsAgent({ extraCa: sim.caPem, env: {} });
    try {
      const ca = (contexts.mock.calls[0]?.[0] as tls.SecureContextOptions | undefined)?.ca;
      expect(ca).toEqual([...tls.rootCertificates, sim.caPem]);
    } finally {
      contexts.mockRestore();
      agent.destroy();
    }
  });

  it('createHttpsAgent should keep trusting the CAs of NODE_EXTRA_CA_CERTS beside the extra CA', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'urs-tls-'));
    const file = join(dir, 'extra.pem');
    writeFileSync(file, sim.caPem);
    // Another CA given as the extra one: the simulator's is trusted only through NODE_EXTRA_CA_CERTS.
    const agent = createHttpsAgent({ extraCa: tls.rootCertificates[0]!, env: { NODE_EXTRA_CA_CERTS: file } });
    try {
      expect(await fetchInfo(agent, `${sim.baseUrl}/_sim/info`)).toBe(200);
    } finally {
      agent.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('createHttpsAgent should skip a NODE_EXTRA_CA_CERTS file it cannot read, as Node does', async () => {
    const agent = createHttpsAgent({
      extraCa: sim.caPem,
      env: { NODE_EXTRA_CA_CERTS: join(tmpdir(), 'urs-tls-absent', 'none.pem') },
    });
    try {
      expect(await fetchInfo(agent, `${sim.baseUrl}/_sim/info`)).toBe(200);
    } finally {
      agent.destroy();
    }
  });

  it('createHttpsAgent should refuse a server whose CA it was not given', async () => {
    const agent = createHttpsAgent();
    try {
      await expect(fetchInfo(agent, `${sim.baseUrl}/_sim/info`)).rejects.toMatchObject({
        code: expect.stringMatching(/CERT|SIGNATURE|SELF_SIGNED|ISSUER/),
      });
    } finally {
      agent.destroy();
    }
  });

  it('createHttpsAgent should set TCP keep-alive once per connection, not on every request', async () => {
    const setKeepAlive = jest.spyOn(net.Socket.prototype, 'setKeepAlive');
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    const sockets = new Set<unknown>();
    try {
      // axios sets keep-alive on each request's socket and the agent on each socket it takes back.
      const http = axios.create({ httpsAgent: agent, proxy: false });
      for (let i = 0; i < 5; i++) {
        const response = await http.get(`${sim.baseUrl}/_sim/info`);
        sockets.add(response.request.socket);
        expect(response.status).toBe(200);
      }
      expect(sockets.size).toBe(1);
      expect(setKeepAlive.mock.calls).toEqual([[true, 60_000]]);
      // A real change still goes through.
      const [socket] = [...sockets] as net.Socket[];
      socket?.setKeepAlive(false);
      expect(setKeepAlive.mock.calls).toEqual([
        [true, 60_000],
        [false, undefined],
      ]);
    } finally {
      setKeepAlive.mockRestore();
      agent.destroy();
    }
  });
});

import { get } from 'node:https';
import type { Agent } from 'node:https';
import tls from 'node:tls';
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
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    try {
      const ca = (contexts.mock.calls[0]?.[0] as tls.SecureContextOptions | undefined)?.ca;
      expect(ca).toEqual([...tls.rootCertificates, sim.caPem]);
    } finally {
      contexts.mockRestore();
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
});

import { startSimulator, type Simulator } from '@urs/simulator';
import { CLIENT_ID, getToken, request, SECRET, TENANT } from './helpers';

// In a container network the stages reach the simulator by its service name (https://sim:8443), which does not
// resolve here: the requests connect to the port it listens on and check the certificate against that name.
const PUBLIC_URL = 'https://sim.urs.internal:8443';

describe('simulator public URL', () => {
  let sim: Simulator;
  let connectTo: string;
  const reach = { servername: 'sim.urs.internal' };

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false, publicUrl: PUBLIC_URL });
    sim.addTenant({
      azureTenantId: TENANT,
      apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
      fleet: { size: 3 },
    });
    connectTo = `https://127.0.0.1:${sim.port}`;
  });

  afterAll(() => sim.close());

  test('the server certificate should name the public URL host as well as localhost', async () => {
    const named = await request(sim, '/_sim/info', { connectTo, ...reach });
    expect(named.status).toBe(200);
    expect(named.json.baseUrl).toBe(PUBLIC_URL);
    await expect(request(sim, '/_sim/info', { connectTo, servername: 'other.urs.internal' })).rejects.toThrow(
      /altnames/i,
    );
    expect((await request(sim, '/_sim/info', { connectTo })).status).toBe(200);
  });

  test('links in answers should name the public URL', async () => {
    const metadata = await request(sim, `/${TENANT}/v2.0/.well-known/openid-configuration`, {
      connectTo,
      ...reach,
    });
    expect(metadata.json.token_endpoint).toBe(`${PUBLIC_URL}/${TENANT}/oauth2/v2.0/token`);
    expect(metadata.json.issuer).toBe(`${PUBLIC_URL}/${TENANT}/v2.0`);

    const token = await getToken({ ...sim, baseUrl: connectTo } as Simulator);
    const page = await request(sim, '/api/machines?$top=1', { connectTo, ...reach, token });
    expect(page.status).toBe(200);
    expect(page.json['@odata.context']).toBe(`${PUBLIC_URL}/api/$metadata#Machines`);
  });

  test('startSimulator should refuse a public URL that is more than https and a host', async () => {
    for (const publicUrl of ['http://sim:8443', 'https://sim:8443/api', 'not a url', 'https://u:p@sim'])
      await expect(startSimulator({ publicUrl })).rejects.toThrow(/publicUrl must be/);
  });
});

import https from 'node:https';
import { startSimulator, type AppSpec, type Simulator } from '@urs/simulator';

export const TENANT = '7f3c2a10-5b1e-4c6d-9e8f-0a1b2c3d4e5f';
export const CLIENT_ID = '0d8f6b4e-1c2a-4e3b-8d7f-9a6b5c4d3e2f';
export const SECRET = 'Xq8~simulated.secret-value_123';
export const MDE_SCOPE = 'https://api.securitycenter.microsoft.com/.default';
/** A tenant with no devices, beside TENANT in `simWithTenant`'s simulator. */
export const EMPTY_TENANT = '66666666-aaaa-4bbb-8ccc-000000000006';

/**
 * A simulator (quotas off unless asked for), TENANT's fleet of `size` devices (`seed`) reachable by CLIENT_ID
 * and by `apps` (same secret, their own roles), and EMPTY_TENANT with CLIENT_ID only.
 */
export async function simWithTenant(
  size: number,
  seed: number,
  apps: Pick<AppSpec, 'clientId' | 'roles'>[] = [],
  options: { quotas?: boolean } = {},
): Promise<Simulator> {
  const sim = await startSimulator({ quotas: options.quotas ?? false });
  sim.addTenant({
    azureTenantId: TENANT,
    apps: [
      { clientId: CLIENT_ID, clientSecret: SECRET },
      ...apps.map((app) => ({ ...app, clientSecret: SECRET })),
    ],
    fleet: { size, seed },
  });
  sim.addTenant({ azureTenantId: EMPTY_TENANT, apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }] });
  return sim;
}

export interface HttpReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- tests inspect arbitrary wire JSON
}

export function request(
  sim: Simulator,
  path: string,
  options: {
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    token?: string;
    timeoutMs?: number;
    /** Where to connect instead of `sim.baseUrl` (a public URL that does not resolve here). */
    connectTo?: string;
    /** The host name the server's certificate must name. Default: the host connected to. */
    servername?: string;
  } = {},
): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body));
    const req = https.request(
      `${options.connectTo ?? sim.baseUrl}${path}`,
      {
        method: options.method ?? 'GET',
        headers,
        ...(options.servername === undefined ? {} : { servername: options.servername }),
        ca: sim.caPem,
        agent: false,
        timeout: options.timeoutMs ?? 10_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}

export function tokenForm(fields: Record<string, string>): {
  method: string;
  headers: Record<string, string>;
  body: string;
} {
  return {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields).toString(),
  };
}

export async function getToken(
  sim: Simulator,
  tenant = TENANT,
  clientId = CLIENT_ID,
  secret = SECRET,
): Promise<string> {
  const reply = await request(
    sim,
    `/${tenant}/oauth2/v2.0/token`,
    tokenForm({
      grant_type: 'client_credentials',
      client_id: clientId,
      client_secret: secret,
      scope: MDE_SCOPE,
    }),
  );
  if (reply.status !== 200) throw new Error(`token request failed: ${reply.text}`);
  return reply.json.access_token as string;
}

export function decodeJwt(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<
    string,
    unknown
  >;
}

export function control(sim: Simulator, method: string, path: string, body?: unknown): Promise<HttpReply> {
  return request(sim, `/_sim/${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

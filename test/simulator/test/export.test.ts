import https from 'node:https';
import { gunzipSync } from 'node:zlib';
import { cveCatalog, MDE_QUOTAS, startSimulator, type Simulator } from '@urs/simulator';
import { createTenant } from '../src/state';
import { exportFilesList, SasSigner, sasFailure } from '../src/tvmexport';
import {
  CLIENT_ID,
  control,
  EMPTY_TENANT,
  getToken,
  request,
  SECRET,
  simWithTenant,
  TENANT,
} from './helpers';

const LARGE_TENANT = '55555555-aaaa-4bbb-8ccc-000000000005';
const MACHINES_ONLY_CLIENT = '88888888-aaaa-4bbb-8ccc-000000000008';
const EXPORT_PATH = '/api/machines/SoftwareVulnerabilitiesExport';
const AUTH_FAILED =
  /^<\?xml version="1\.0" encoding="utf-8"\?><Error><Code>AuthenticationFailed<\/Code><Message>[^<]+<\/Message>/;
const NOT_FOUND =
  /^<\?xml version="1\.0" encoding="utf-8"\?><Error><Code>BlobNotFound<\/Code><Message>The specified blob does not exist\.\nRequestId:/;

interface Download {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** GETs an export file's SAS URL as it is handed out: absolute, without a bearer token. */
function download(sim: Simulator, url: string): Promise<Download> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca: sim.caPem, agent: false, timeout: 10_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

/** The lines of a downloaded file, each a row's JSON text. */
function lines(file: Download): string[] {
  const text = gunzipSync(file.body).toString('utf8');
  if (text === '') return [];
  expect(text.endsWith('\n')).toBe(true);
  return text.slice(0, -1).split('\n');
}

describe('SoftwareVulnerabilitiesExport (export via files)', () => {
  let sim: Simulator;
  let token: string;

  beforeAll(async () => {
    sim = await simWithTenant(120, 5, [{ clientId: MACHINES_ONLY_CLIENT, roles: ['Machine.Read.All'] }]);
    token = await getToken(sim);
  });

  afterAll(() => sim.close());

  const get = (path: string, bearer = token) => request(sim, path, { token: bearer });
  const exportFiles = async (query = '', bearer = token) => {
    const reply = await get(`${EXPORT_PATH}${query}`, bearer);
    expect(reply.status).toBe(200);
    return reply.json as { '@odata.context': string; exportFiles: string[]; generatedTime: string };
  };

  /** Every row of the JSON export, page by page. */
  async function jsonExportRows(): Promise<string[]> {
    const rows: string[] = [];
    let url: string | undefined = '/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=300';
    while (url) {
      const reply = await get(url);
      expect(reply.status).toBe(200);
      rows.push(...(reply.json.value as unknown[]).map((row) => JSON.stringify(row)));
      url = reply.json['@odata.nextLink']?.slice(sim.baseUrl.length);
    }
    return rows;
  }

  test('the export should answer its documented shape: the file SAS URLs and generatedTime', async () => {
    const before = Date.now();
    sim.resetStats();
    const reply = await get(EXPORT_PATH);
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toMatch(/^application\/json/);
    expect(Object.keys(reply.json)).toEqual(['@odata.context', 'exportFiles', 'generatedTime']);
    expect(reply.json['@odata.context']).toBe(
      `${sim.baseUrl}/api/$metadata#microsoft.windowsDefenderATP.api.ExportFilesResponse`,
    );
    const { generatedTime, exportFiles: files } = reply.json as {
      generatedTime: string;
      exportFiles: string[];
    };
    expect(generatedTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(files).toHaveLength(1);
    const shape = new RegExp(
      `^${sim.baseUrl.replace(/\./g, '\\.')}/tvm-export/${TENANT}/(\\d+)/part-00000\\.json\\.gz` +
        '\\?sv=2020-08-04&sr=b&sp=r&se=([^&]+)&sig=([A-Za-z0-9_-]{43})$',
    );
    const [, generation, se] = shape.exec(files[0] as string) ?? [];
    expect(Number(generation)).toBe(Date.parse(generatedTime));
    // A one-hour SAS by default, six hours at most.
    const expiry = Date.parse(decodeURIComponent(se as string));
    expect(expiry).toBeGreaterThan(before + 3_600_000 - 2_000);
    expect(expiry).toBeLessThanOrEqual(Date.now() + 3_600_000);
    const six = new URL((await exportFiles('?sasValidHours=6')).exportFiles[0] as string);
    expect(Date.parse(six.searchParams.get('se') as string)).toBeGreaterThan(before + 6 * 3_600_000 - 2_000);

    // The name is matched case-insensitively, never taken for a machine id.
    expect((await exportFiles('', token)).generatedTime).toBe(generatedTime);
    const lower = await get('/api/machines/softwarevulnerabilitiesexport');
    expect(lower.status).toBe(200);
    expect(lower.json.generatedTime).toBe(generatedTime);
    // An empty fleet still has one (empty) file.
    const empty = await exportFiles('', await getToken(sim, EMPTY_TENANT));
    expect(empty.exportFiles).toHaveLength(1);
    const emptyFile = await download(sim, empty.exportFiles[0] as string);
    expect(emptyFile.status).toBe(200);
    expect(lines(emptyFile)).toEqual([]);
    expect(sim.stats().calls).toMatchObject({ exportFiles: 5, exportFile: 1 });
    expect(sim.stats().callsByTenant[TENANT]).toMatchObject({ exportFiles: 4 });
    expect(sim.stats().callsByTenant[EMPTY_TENANT]).toMatchObject({ exportFiles: 1, exportFile: 1 });
  });

  test('the export should answer 401 without a token and 403 without Vulnerability.Read.All', async () => {
    expect((await request(sim, EXPORT_PATH)).status).toBe(401);
    const machinesOnly = await getToken(sim, TENANT, MACHINES_ONLY_CLIENT);
    const reply = await get(EXPORT_PATH, machinesOnly);
    expect(reply.status).toBe(403);
    expect(reply.json.error.code).toBe('Forbidden');
    expect(reply.json.error.message).toContain('Vulnerability.Read.All');
  });

  test('sasValidHours should accept 1 to 6 and answer 400 InvalidInput naming it otherwise', async () => {
    for (const hours of ['1', '6'])
      expect((await get(`${EXPORT_PATH}?sasValidHours=${hours}`)).status).toBe(200);
    for (const hours of ['7', '0', '1.5', 'abc', '-1']) {
      const reply = await get(`${EXPORT_PATH}?sasValidHours=${hours}`);
      expect({ hours, status: reply.status, code: reply.json.error.code }).toEqual({
        hours,
        status: 400,
        code: 'InvalidInput',
      });
      expect(reply.json.error.message).toContain('sasValidHours');
    }
  });

  test('generatedTime should stay while nothing changes and move after a change', async () => {
    const first = await exportFiles();
    // Reading the fleet, by any API, is no change.
    await jsonExportRows();
    expect((await get('/api/machines?$top=10')).status).toBe(200);
    expect((await download(sim, first.exportFiles[0] as string)).status).toBe(200);
    const second = await exportFiles();
    expect(second.generatedTime).toBe(first.generatedTime);
    expect(second.exportFiles[0]?.split('?')[0]).toBe(first.exportFiles[0]?.split('?')[0]);

    // A device's vulnerabilities changed through the control API.
    const [device] = sim.machines(TENANT);
    const cve = cveCatalog()[0]?.vulnerability;
    const put = await control(sim, 'PUT', `tenants/${TENANT}/machines/${device?.id}/vulnerabilities`, [cve]);
    expect(put.status).toBe(200);
    const third = await exportFiles();
    expect(Date.parse(third.generatedTime)).toBeGreaterThan(Date.parse(second.generatedTime));
    expect(third.exportFiles[0]).toContain(`/${Date.parse(third.generatedTime)}/part-00000.json.gz?`);

    // And through the library API.
    sim.setVulnerabilities(TENANT, device?.id as string, []);
    const fourth = await exportFiles();
    expect(Date.parse(fourth.generatedTime)).toBeGreaterThan(Date.parse(third.generatedTime));
  });

  test("the files should hold exactly the JSON export's rows, one per line", async () => {
    // A vulnerability whose text holds commas and braces: rows must be cut at their starts, not at commas.
    const machines = sim.machines(TENANT);
    const withCves = machines.filter((m) => sim.vulnerabilities(TENANT, m.id).length > 1);
    const [a, b] = sim.vulnerabilities(TENANT, withCves[0]?.id as string);
    sim.setVulnerabilities(TENANT, withCves[0]?.id as string, [{ ...a!, id: 'CVE-2099-1"},{"x":1,\\' }, b!]);

    const listed = await exportFiles();
    expect(listed.exportFiles).toHaveLength(1);
    const file = await download(sim, listed.exportFiles[0] as string);
    expect(file.status).toBe(200);
    expect(file.headers['content-type']).toBe('application/octet-stream');
    // Streamed as it is compressed: no length announced up front.
    expect(file.headers['transfer-encoding']).toBe('chunked');
    expect(file.body.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    const rows = lines(file).map((line) => JSON.stringify(JSON.parse(line)));

    const expected = await jsonExportRows();
    expect(expected.length).toBeGreaterThan(machines.length);
    expect(rows.length).toBe(expected.length);
    expect([...rows].sort()).toEqual([...expected].sort());
    expect(rows.some((row) => row.includes('CVE-2099-1\\"},{\\"x\\":1,\\\\'))).toBe(true);
    expect(sim.stats().callsByTenant[TENANT]?.exportFile).toBeGreaterThan(0);
  });

  test('a file URL with a tampered, missing or expired signature should answer 403 AuthenticationFailed', async () => {
    const [url] = (await exportFiles()).exportFiles as [string];
    const parsed = new URL(url);
    const sig = parsed.searchParams.get('sig') as string;
    const flip = (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1);

    const tampered = new URL(url);
    tampered.searchParams.set('sig', flip);
    const missing = new URL(url);
    missing.searchParams.delete('sig');
    // A later expiry is not the one signed.
    const extended = new URL(url);
    extended.searchParams.set('se', new Date(Date.now() + 48 * 3_600_000).toISOString());
    for (const bad of [tampered, missing, extended]) {
      const reply = await download(sim, bad.toString());
      expect(reply.status).toBe(403);
      expect(reply.headers['content-type']).toBe('application/xml');
      expect(reply.headers['x-ms-error-code']).toBe('AuthenticationFailed');
      expect(reply.body.toString('utf8')).toMatch(AUTH_FAILED);
    }

    // Past its expiry, the URL as handed out no longer grants access.
    const expiresAt = Date.parse(parsed.searchParams.get('se') as string);
    const clock = jest.spyOn(Date, 'now').mockReturnValue(expiresAt + 1_000);
    let expired: Download;
    try {
      expired = await download(sim, url);
    } finally {
      clock.mockRestore();
    }
    expect(expired.status).toBe(403);
    expect(expired.body.toString('utf8')).toMatch(AUTH_FAILED);
    expect(expired.body.toString('utf8')).toContain('Signature not valid in the specified time frame');
    expect((await download(sim, url)).status).toBe(200);
  });

  test("a file URL of an older snapshot should answer 404 BlobNotFound and the new snapshot's URL 200", async () => {
    const [old] = (await exportFiles()).exportFiles as [string];
    expect((await download(sim, old)).status).toBe(200);
    sim.updateMachine(TENANT, sim.machines(TENANT)[5]?.id as string, { osPlatform: 'Linux' });
    const gone = await download(sim, old);
    expect(gone.status).toBe(404);
    expect(gone.headers['content-type']).toBe('application/xml');
    expect(gone.headers['x-ms-error-code']).toBe('BlobNotFound');
    expect(gone.body.toString('utf8')).toMatch(NOT_FOUND);
    const [current] = (await exportFiles()).exportFiles as [string];
    expect(current).not.toBe(old);
    expect((await download(sim, current)).status).toBe(200);
  });

  test('a fleet should be exported in files of at most 50,000 devices', async () => {
    const large = await startSimulator({ quotas: false, recordCacheSize: 0, exportCacheSize: 0 });
    try {
      large.addTenant({
        azureTenantId: LARGE_TENANT,
        apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
        fleet: { size: 100_000, seed: 9 },
      });
      const [last] = large.addMachines(LARGE_TENANT, 1) as [string];
      const cves = cveCatalog()
        .slice(0, 2)
        .map((e) => e.vulnerability);
      large.setVulnerabilities(LARGE_TENANT, last, cves);
      const bearer = await getToken(large, LARGE_TENANT);
      const reply = await request(large, EXPORT_PATH, { token: bearer });
      expect(reply.status).toBe(200);
      const files = reply.json.exportFiles as string[];
      expect(files.map((f) => /part-(\d{5})\.json\.gz/.exec(f)?.[1])).toEqual(['00000', '00001', '00002']);
      // The third file holds the 100,001st device alone.
      const rows = lines(await download(large, files[2] as string)).map(
        (line) => JSON.parse(line) as { deviceId: string; cveId: string | null },
      );
      expect(rows.filter((r) => r.cveId !== null).map((r) => [r.deviceId, r.cveId])).toEqual(
        cves.map((c) => [last, c.id]),
      );
      expect(rows.every((r) => r.deviceId === last)).toBe(true);
    } finally {
      await large.close();
    }
  });
});

describe('export file downloads', () => {
  test('a file should be cut off when the fleet changes while it is written', async () => {
    const sim = await startSimulator({ quotas: false, recordCacheSize: 0, exportCacheSize: 0 });
    try {
      sim.addTenant({
        azureTenantId: LARGE_TENANT,
        apps: [{ clientId: CLIENT_ID, clientSecret: SECRET }],
        fleet: { size: 5_000, seed: 2 },
      });
      const bearer = await getToken(sim, LARGE_TENANT);
      const [url] = (await request(sim, EXPORT_PATH, { token: bearer })).json.exportFiles as [string];
      const victim = sim.machines(LARGE_TENANT)[4_000]?.id as string;
      // The fleet changes once the first compressed bytes arrived, with most devices still to write.
      const outcome = await new Promise<{ status: number; bytes: number; complete: boolean }>(
        (resolve, reject) => {
          https
            .get(url, { ca: sim.caPem, agent: false }, (res) => {
              let bytes = 0;
              res.on('data', (chunk: Buffer) => {
                if (bytes === 0) sim.updateMachine(LARGE_TENANT, victim, { osPlatform: 'Linux' });
                bytes += chunk.length;
              });
              res.on('close', () => resolve({ status: res.statusCode ?? 0, bytes, complete: res.complete }));
              res.on('error', () => undefined);
            })
            .on('error', reject);
        },
      );
      expect(outcome.status).toBe(200);
      expect(outcome.bytes).toBeGreaterThan(0);
      expect(outcome.complete).toBe(false);
      expect((await download(sim, url)).status).toBe(404);
    } finally {
      await sim.close();
    }
  });
});

describe('an export with a device whose onboardingStatus is not a string', () => {
  let sim: Simulator;
  let token: string;
  const odd: string[] = [];

  beforeAll(async () => {
    sim = await simWithTenant(30, 8);
    // Devices of the export (onboarded, with CVEs) whose onboardingStatus a patch made a number and a boolean.
    const listed = sim.machines(TENANT).filter((m) => sim.vulnerabilities(TENANT, m.id).length > 0);
    for (const [m, status] of [
      [listed[0], 1],
      [listed[1], true],
    ] as const) {
      if (!m) throw new Error('the fleet has too few devices with vulnerabilities');
      sim.updateMachine(TENANT, m.id, { onboardingStatus: status as unknown as string });
      odd.push(m.id);
    }
    token = await getToken(sim);
  });

  afterAll(() => sim.close());

  /** A GET that gives up (rejects) after 5 s rather than waiting for an answer that never ends. */
  const bounded = (url: string, bearer?: string): Promise<{ status: number; body: Buffer }> =>
    new Promise((resolve, reject) => {
      const req = https.get(
        url,
        { ca: sim.caPem, agent: false, headers: bearer ? { authorization: `Bearer ${bearer}` } : {} },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.setTimeout(5_000, () => req.destroy(new Error('no complete answer within 5 s')));
      req.on('error', reject);
    });

  /** Each device's CVE ids as the rows give them (inventory rows without a CVE left out). */
  const cvesByDevice = (rows: { deviceId: string; cveId: string | null }[]): Map<string, string[]> => {
    const out = new Map<string, string[]>();
    for (const row of rows)
      if (row.cveId) out.set(row.deviceId, [...(out.get(row.deviceId) ?? []), row.cveId].sort());
    return out;
  };

  /** Each device's CVE ids as the per-device endpoint gives them. */
  const expected = (): Map<string, string[]> =>
    new Map(
      sim
        .machines(TENANT)
        .map(
          (m) =>
            [
              m.id,
              sim
                .vulnerabilities(TENANT, m.id)
                .map((v) => v.id)
                .sort(),
            ] as const,
        )
        .filter(([, ids]) => ids.length > 0),
    );

  test('the JSON export should answer every row and end, reading such a device as not onboarded', async () => {
    const reply = await bounded(
      `${sim.baseUrl}/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=100000`,
      token,
    );
    expect(reply.status).toBe(200);
    const rows = JSON.parse(reply.body.toString('utf8')).value as {
      deviceId: string;
      cveId: string | null;
    }[];
    expect(cvesByDevice(rows)).toEqual(expected());
    for (const id of odd) expect(sim.vulnerabilities(TENANT, id)).toEqual([]);
  });

  test('the export file should be served whole', async () => {
    const list = await bounded(`${sim.baseUrl}${EXPORT_PATH}`, token);
    expect(list.status).toBe(200);
    const [url] = JSON.parse(list.body.toString('utf8')).exportFiles as [string];
    const file = await bounded(url);
    expect(file.status).toBe(200);
    const rows = lines({ status: file.status, headers: {}, body: file.body }).map(
      (line) => JSON.parse(line) as { deviceId: string; cveId: string | null },
    );
    expect(cvesByDevice(rows)).toEqual(expected());
  });
});

describe('SoftwareVulnerabilitiesExport quota', () => {
  let sim: Simulator;

  beforeAll(async () => {
    sim = await simWithTenant(10, 1, [], { quotas: true });
  });

  afterAll(() => sim.close());

  test('the export should allow 5 calls a minute, then answer 429 with Retry-After; its files are not counted', async () => {
    expect(MDE_QUOTAS.exportFiles).toEqual({ perMinute: 5, perHour: 20 });
    const token = await getToken(sim);
    const replies = [];
    for (let i = 0; i < 6; i++) replies.push(await request(sim, EXPORT_PATH, { token }));
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 429]);
    const throttled = replies[5]!;
    expect(throttled.json.error.code).toBe('TooManyRequests');
    expect(Number(throttled.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(throttled.headers['retry-after'])).toBeLessThanOrEqual(60);
    expect(sim.stats().throttledByTenant[TENANT]).toBe(1);
    // Downloads draw on no MDE quota, and the export's quota is its own.
    const file = await download(sim, replies[0]?.json.exportFiles[0] as string);
    expect(file.status).toBe(200);
    expect(
      (await request(sim, '/api/machines/SoftwareVulnerabilitiesByMachine?pageSize=1', { token })).status,
    ).toBe(200);
  });
});

describe('export file SAS', () => {
  test('sasFailure should accept a URL as handed out until its expiry, and nothing altered', () => {
    const tenant = createTenant(
      { azureTenantId: TENANT, apps: [], fleet: { size: 3 } },
      Date.UTC(2026, 0, 1),
    );
    const signer = new SasSigner();
    const now = Date.UTC(2026, 0, 2, 12);
    const query = new URLSearchParams({ sasValidHours: '2' });
    const reply = exportFilesList('https://sim.test', tenant, query, signer, now);
    const url = new URL((reply.body as { exportFiles: string[] }).exportFiles[0] as string);
    expect(url.searchParams.get('se')).toBe('2026-01-02T14:00:00Z');
    expect(sasFailure(signer, url, now)).toBeUndefined();
    expect(sasFailure(signer, url, now + 2 * 3_600_000 - 1)).toBeUndefined();
    expect(sasFailure(signer, url, now + 2 * 3_600_000)).toMatch(
      /^Signature not valid in the specified time frame/,
    );
    // Another server's key, another file's path.
    expect(sasFailure(new SasSigner(), url, now)).toBe('Signature did not match.');
    const otherPart = new URL(url.toString().replace('part-00000', 'part-00001'));
    expect(sasFailure(signer, otherPart, now)).toBe('Signature did not match.');
  });
});

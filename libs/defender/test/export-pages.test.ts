import { silentLogger } from '@urs/logging';
import { capturingLogger, type LogLine } from '@urs/testkit';
import {
  type ApiCaller,
  DefenderError,
  DefenderErrorCode,
  fetchMachineVulnerabilities,
  readVulnerabilitiesByMachine,
  type RowsScan,
} from '../src';

/**
 * An ApiCaller whose export answers the given pages in turn: a next link to a new page, the same next
 * link again (`'again'`), none, or a 404.
 */
function exportApi(answers: ('next' | 'again' | 'last' | 404)[]): { api: ApiCaller; asked: string[] } {
  const asked: string[] = [];
  const scanRows = async (_endpoint: string, path: string): Promise<RowsScan> => {
    const answer = answers[asked.length];
    asked.push(path);
    if (answer === 404) return { status: 404 };
    if (answer === 'again') return { status: 200, members: { '@odata.nextLink': path } };
    return {
      status: 200,
      members: answer === 'next' ? { '@odata.nextLink': `/next/${asked.length}` } : {},
    };
  };
  return { api: { scanRows } as unknown as ApiCaller, asked };
}

describe('readVulnerabilitiesByMachine', () => {
  const deps = (api: ApiCaller) => ({ api, logger: silentLogger, azureTenantId: 't1' });

  it('should fail retryably, not read a fleet without CVEs, when its first page answers 404', async () => {
    const { api, asked } = exportApi([404]);
    await expect(readVulnerabilitiesByMachine(deps(api), () => undefined)).rejects.toMatchObject({
      code: 'DEFENDER_UNAVAILABLE',
      canRetry: true,
      message: expect.stringContaining('404 for /api/machines/SoftwareVulnerabilitiesByMachine of tenant t1'),
    });
    expect(asked).toHaveLength(1);
  });

  it('should fail retryably, not end, when a page after the first answers 404', async () => {
    const { api, asked } = exportApi(['next', 'next', 404]);
    await expect(readVulnerabilitiesByMachine(deps(api), () => undefined)).rejects.toMatchObject({
      code: 'DEFENDER_UNAVAILABLE',
      canRetry: true,
      message: expect.stringContaining('404 for page 3 of /api/machines/SoftwareVulnerabilitiesByMachine'),
    });
    expect(asked).toEqual(['/api/machines/SoftwareVulnerabilitiesByMachine', '/next/1', '/next/2']);
  });

  it('should fail retryably, not read for ever, when a page links to itself', async () => {
    const { api, asked } = exportApi(['next', 'again', 'again']);
    await expect(readVulnerabilitiesByMachine(deps(api), () => undefined)).rejects.toMatchObject({
      code: 'DEFENDER_MALFORMED_RESPONSE',
      canRetry: true,
      message: expect.stringContaining('with a next link it had given before'),
    });
    expect(asked).toEqual(['/api/machines/SoftwareVulnerabilitiesByMachine', '/next/1']);
  });

  it('should read every page to the one without a next link', async () => {
    const { api } = exportApi(['next', 'last']);
    expect(await readVulnerabilitiesByMachine(deps(api), () => undefined)).toMatchObject({ pages: 2 });
  });
});

describe('readVulnerabilitiesByMachine and a page that does not arrive in time', () => {
  const base = 'https://api.security.microsoft.com/api/machines/SoftwareVulnerabilitiesByMachine';
  /** Microsoft's next links: `pagesize` in lower case, the position in `$skiptoken`. */
  const link = (size: number, token: string) => `${base}?pagesize=${size}&$skiptoken=${token}`;

  /**
   * An export of three pages whose second one (at `$skiptoken` p2) runs out of time above `fastUpTo` rows
   * when its call is not to be retried as is; each call as [what it asked, the page size, its onTimeout].
   */
  function slowSecondPage(fastUpTo: number) {
    const asked: [string, number, string][] = [];
    const scanRows = async (
      _endpoint: string,
      next: string,
      params: Record<string, number> | undefined,
      _onRow: unknown,
      _toRow: unknown,
      _signal: unknown,
      _reader: unknown,
      onTimeout = 'retry',
    ): Promise<RowsScan> => {
      const size = params?.['pageSize'] ?? Number(/pagesize=(\d+)/i.exec(next)?.[1]);
      asked.push([
        next.replace(base, '').replace('/api/machines/SoftwareVulnerabilitiesByMachine', ''),
        size,
        onTimeout,
      ]);
      if (next.includes('$skiptoken=p2') && size > fastUpTo) {
        throw new DefenderError(DefenderErrorCode.UNAVAILABLE, 'no answer within 30 s', {
          canRetry: true,
          details: { networkCode: 'ECONNABORTED' },
        });
      }
      const token = params ? 'p2' : next.includes('$skiptoken=p2') ? 'p3' : undefined;
      return { status: 200, members: token ? { '@odata.nextLink': link(size, token) } : {} };
    };
    return { api: { scanRows } as unknown as ApiCaller, asked };
  }

  it('should ask for the same position again with half the page size, down to 5,000, and keep it for the rest of the read', async () => {
    const { api, asked } = slowSecondPage(5_000);
    const lines: LogLine[] = [];
    const read = await readVulnerabilitiesByMachine(
      { api, logger: capturingLogger(lines), azureTenantId: 't1' },
      () => undefined,
      { pageSize: 20_000 },
    );
    expect(read.pages).toBe(3);
    expect(asked).toEqual([
      ['', 20_000, 'throw'],
      ['?pagesize=20000&$skiptoken=p2', 20_000, 'throw'],
      ['?pagesize=10000&$skiptoken=p2', 10_000, 'throw'],
      // At the floor a page is retried as any call is.
      ['?pagesize=5000&$skiptoken=p2', 5_000, 'retry'],
      ['?pagesize=5000&$skiptoken=p3', 5_000, 'retry'],
    ]);
    expect(lines.filter((line) => line.level === 'warn')).toMatchObject([
      { azureTenantId: 't1', page: 2, pageSize: 10_000 },
      { azureTenantId: 't1', page: 2, pageSize: 5_000 },
    ]);
  });

  it('should ask for the first page again with half the page size as its parameter', async () => {
    const { api, asked } = slowSecondPage(Infinity);
    const scanRows = api.scanRows.bind(api);
    let first = true;
    const slowFirst = {
      scanRows: (...args: Parameters<ApiCaller['scanRows']>) => {
        if (first) {
          first = false;
          asked.push(['', Number(args[2]?.['pageSize']), String(args[7])]);
          return Promise.reject(
            new DefenderError(DefenderErrorCode.UNAVAILABLE, 'stopped when its call slot ended', {
              canRetry: true,
              details: { ranOutOfSlot: true },
            }),
          );
        }
        return scanRows(...args);
      },
    } as unknown as ApiCaller;
    await readVulnerabilitiesByMachine(
      { api: slowFirst, logger: silentLogger, azureTenantId: 't1' },
      () => undefined,
    );
    expect(asked.slice(0, 3)).toEqual([
      ['', 50_000, 'throw'],
      ['', 25_000, 'throw'],
      ['?pagesize=25000&$skiptoken=p2', 25_000, 'throw'],
    ]);
  });
});

describe('fetchMachineVulnerabilities', () => {
  it('should merge a CVE sent in another case into one entry, its id in upper case', async () => {
    const value = [
      { id: 'CVE-2024-1234', cvssV3: 7.5 },
      { id: 'cve-2024-1234', cvssV3: 9.8 },
      { id: 'Cve-2023-0001', cvssV3: null },
    ];
    const api = { get: async () => ({ status: 200, body: { value } }) } as unknown as ApiCaller;
    const list = await fetchMachineVulnerabilities({ api, logger: silentLogger, azureTenantId: 't1' }, 'm1');
    expect(list).toEqual([
      { id: 'CVE-2024-1234', cvssV3: 9.8 },
      { id: 'CVE-2023-0001', cvssV3: null },
    ]);
  });

  it('should fail retryably, not read for ever, when the answer links to itself', async () => {
    let calls = 0;
    const get = async (_endpoint: string, path: string) => {
      calls++;
      return { status: 200, body: { value: [], '@odata.nextLink': path } };
    };
    const api = { get } as unknown as ApiCaller;
    await expect(
      fetchMachineVulnerabilities({ api, logger: silentLogger, azureTenantId: 't1' }, 'm1'),
    ).rejects.toMatchObject({ code: 'DEFENDER_MALFORMED_RESPONSE', canRetry: true });
    expect(calls).toBe(1);
  });
});

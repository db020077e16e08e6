import { silentLogger } from '@urs/logging';
import {
  type ApiCaller,
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

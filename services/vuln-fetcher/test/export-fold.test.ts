import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import {
  MalformedODataError,
  type ODataSink,
  createDefenderClient,
  createHttpsAgent,
  createLocalLimiter,
  createLocalQuotaGate,
} from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { type Simulator, startSimulator } from '@urs/simulator';
import { FOLD_THREAD_RESOURCE_LIMITS, WorkerExportFold } from '../src/export-fold';
import { VulnerabilityFolder } from '../src/summarise';

// The thread runs compiled code: the package is built before its tests (`npm run build`, as CI does).
const WORKER = join(__dirname, '../dist/export-fold-worker.js');

interface Row {
  deviceId: string;
  cveId: string | null;
  cvssScore: number | null;
}

/** Export rows as SoftwareVulnerabilitiesByMachine gives them, with the members a row has besides. */
function exportRows(count: number): Row[] {
  return Array.from({ length: count }, (_, i) => ({
    deviceId: `${(i % 37).toString(16).padStart(40, 'a')}`,
    cveId: i % 11 === 0 ? null : `CVE-2026-${i % 23}`,
    cvssScore: i % 7 === 0 ? null : (i % 100) / 10,
  }));
}

function body(rows: readonly unknown[], nextLink?: string): Buffer {
  const value = rows.map((row) =>
    JSON.stringify({
      id: 'x',
      ...(row as object),
      deviceName: 'host',
      softwareName: 'app',
      vulnerabilitySeverityLevel: 'High',
      exploitabilityLevel: 'NoExploit',
      diskPaths: ['C:\\\\app'],
    }),
  );
  const link = nextLink ? `,"@odata.nextLink":${JSON.stringify(nextLink)}` : '';
  return Buffer.from(`{"@odata.context":"ctx","value":[${value.join(',')}]${link}}`);
}

/** The bytes in chunks of uneven sizes, as a socket gives them. */
function chunks(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, size = 7; at < bytes.length; at += size, size = (size * 5) % 70_001) {
    out.push(bytes.subarray(at, at + size));
  }
  return out;
}

describe('foldExportOnThread on an export listing CVEs once per product', () => {
  let sim: Simulator;

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false });
  });

  afterAll(async () => {
    await sim.close();
  });

  it('should fold a device’s CVE listed on several rows as the per-device CVEs, counted once', async () => {
    const { foldExportOnThread } = (await import(
      join(__dirname, '../dist/export-fold.js')
    )) as typeof import('../src/export-fold');
    const app = { azureTenantId: randomUUID(), clientId: randomUUID(), clientSecret: `Zx8Q~${randomUUID()}` };
    sim.addTenant({ ...app, apps: [app], fleet: { size: 80, seed: 21, multiProductCves: true } });
    const httpsAgent = createHttpsAgent({ extraCa: sim.caPem });
    const limiter = createLocalLimiter();
    const client = createDefenderClient(app, {
      limiter,
      quota: createLocalQuotaGate(),
      logger: silentLogger,
      overrides: { authorityHost: sim.baseUrl, apiBase: sim.baseUrl },
      httpsAgent,
    });
    try {
      let rows = 0;
      await client.readVulnerabilitiesByMachine((_device, vulnerability) => (rows += vulnerability ? 1 : 0));
      const perDevice = new VulnerabilityFolder();
      let distinct = 0;
      for (const machine of sim.machines(app.azureTenantId)) {
        const cves = sim.vulnerabilities(app.azureTenantId, machine.id);
        distinct += cves.length;
        for (const cve of cves) perDevice.add(machine.id, { id: cve.id, cvssV3: cve.cvssV3 });
      }
      // The export repeats CVEs across products: more rows than the devices' CVEs.
      expect(rows).toBeGreaterThan(distinct);
      const folded = await foldExportOnThread(client);
      const summaries = new Map(folded.summaries(7));
      for (const [device, summary] of perDevice.summaries(7)) expect(summaries.get(device)).toEqual(summary);
    } finally {
      client.close();
      await limiter.close();
      httpsAgent.destroy();
    }
  });
});

function foldedHere(rows: readonly Row[]): VulnerabilityFolder {
  const folder = new VulnerabilityFolder();
  for (const row of rows)
    folder.add(row.deviceId, row.cveId === null ? undefined : { id: row.cveId, cvssV3: row.cvssScore });
  return folder;
}

describe('WorkerExportFold', () => {
  it('should fold the pages handed to it as the fold of this thread does, retried pages included', async () => {
    const invalid: string[] = [];
    const fold = new WorkerExportFold(WORKER);
    const report = (reason: string): number => invalid.push(reason);
    try {
      const first = exportRows(3000);
      const second = exportRows(5000).slice(3000);
      const page1 = body(first, 'https://api/next');
      // The first attempt at page 1 is cut halfway; its retry gives the page again, whole.
      const cut = fold.sink(report);
      for (const chunk of chunks(page1.subarray(0, page1.length / 2))) cut.push(chunk);
      const retry = fold.sink(report);
      for (const chunk of chunks(page1)) retry.push(chunk);
      expect(await retry.end()).toEqual({
        members: { '@odata.context': 'ctx', '@odata.nextLink': 'https://api/next' },
        hasValue: true,
      });
      const last = fold.sink(report);
      for (const chunk of chunks(body(second))) last.push(chunk);
      await last.end();
      const folded = await fold.fold();
      const expected = foldedHere([...first, ...second]);
      expect(folded.size).toBe(expected.size);
      expect(new Map(folded.summaries(7))).toEqual(new Map(expected.summaries(7)));
      expect(invalid).toEqual([]);
    } finally {
      await fold.close();
    }
  });

  it('should have the answer wait while the thread is parts behind, so its bytes do not pile up', async () => {
    const fold = new WorkerExportFold(WORKER);
    try {
      const rows = exportRows(60_000);
      const page = body(rows);
      expect(page.length).toBeGreaterThan(12 * 1024 * 1024);
      const sink = fold.sink(() => undefined);
      let waits = 0;
      // As the client reads an answer: the next chunk only once a push's promise settled.
      for (let at = 0; at < page.length; at += 64 * 1024) {
        const behind = sink.push(page.subarray(at, at + 64 * 1024));
        if (behind) {
          waits++;
          await behind;
        }
      }
      await sink.end();
      expect(waits).toBeGreaterThan(0);
      expect(new Map((await fold.fold()).summaries(7))).toEqual(new Map(foldedHere(rows).summaries(7)));
    } finally {
      await fold.close();
    }
  });

  it('should report an invalid row and fold the others', async () => {
    const invalid: string[] = [];
    const fold = new WorkerExportFold(WORKER);
    const report = (reason: string): number => invalid.push(reason);
    try {
      const rows = exportRows(10);
      const sink = fold.sink(report);
      sink.push(body([...rows, { cveId: 'CVE-1', cvssScore: 5 }]));
      await sink.end();
      expect(invalid).toHaveLength(1);
      expect(invalid[0]).toMatch(/deviceId/);
      expect((await fold.fold()).size).toBe(foldedHere(rows).size);
    } finally {
      await fold.close();
    }
  });

  it('should fold the device of a row skipped as unreadable as one without vulnerabilities', async () => {
    const invalid: string[] = [];
    const fold = new WorkerExportFold(WORKER);
    try {
      const rows = exportRows(10);
      const unreadable = 'f'.repeat(40);
      const sink = fold.sink((reason) => invalid.push(reason));
      sink.push(body([...rows, { deviceId: unreadable, cveId: 'CVE-1', cvssScore: 11 }]));
      await sink.end();
      expect(invalid).toHaveLength(1);
      const folded = await fold.fold();
      expect(folded.summaryOf(unreadable, 7)).toBeNull();
      expect(new Map(folded.summaries(7))).toEqual(
        new Map([...foldedHere(rows).summaries(7), [unreadable, null]]),
      );
    } finally {
      await fold.close();
    }
  });

  it('should reject an answer that is not a whole OData object', async () => {
    const fold = new WorkerExportFold(WORKER);
    const report = (): void => undefined;
    try {
      const sink = fold.sink(report);
      const page = body(exportRows(20));
      sink.push(page.subarray(0, page.length - 10));
      await expect(sink.end()).rejects.toBeInstanceOf(MalformedODataError);
    } finally {
      await fold.close();
    }
  });

  it('should fail what is asked of a thread that died, and of one closed', async () => {
    const broken = join(tmpdir(), `export-fold-broken-${process.pid}.js`);
    writeFileSync(broken, "throw new Error('the thread could not start');\n");
    const dead = new WorkerExportFold(broken);
    await expect(dead.fold()).rejects.toThrow('the thread could not start');
    await dead.close();
    const closed = new WorkerExportFold(WORKER);
    await closed.close();
    await expect(closed.fold()).rejects.toThrow(/closed/);
  });

  /** A thread of `source`'s, in a file of its own (removed after the test). */
  function threadFile(name: string, source: string): string {
    const file = join(tmpdir(), `export-fold-${name}-${process.pid}.js`);
    writeFileSync(file, source);
    return file;
  }

  /** What a fold thread of `source`'s answers an answer's end, as `members`. */
  async function endOf(fold: WorkerExportFold): Promise<Record<string, unknown>> {
    const sink = fold.sink(() => undefined);
    sink.push(Buffer.from('{"value":['));
    return (await sink.end()).members;
  }

  it("should cap the thread's heap, so that the process's heaps fit its memory limit", async () => {
    // A thread that answers an answer's end with its limits, as the thread itself sees them.
    const file = threadFile(
      'limits',
      `const { parentPort, resourceLimits, workerData } = require('node:worker_threads');
const { getHeapStatistics } = require('node:v8');
parentPort.on('message', (request) => {
  if (request.type === 'chunk') parentPort.postMessage({ type: 'took' });
  if (request.type !== 'end') return;
  const members = { resourceLimits, workerData, heapSizeLimit: getHeapStatistics().heap_size_limit };
  parentPort.postMessage({ id: request.id, type: 'end', rest: { members, hasValue: true }, invalid: [] });
});
`,
    );
    const fold = new WorkerExportFold(file);
    try {
      const members = await endOf(fold);
      expect(members['resourceLimits']).toMatchObject(FOLD_THREAD_RESOURCE_LIMITS);
      // The budget the thread keeps to itself, where the process's --max-old-space-size overrides the above.
      expect(members['workerData']).toEqual({
        heapBudgetMb: FOLD_THREAD_RESOURCE_LIMITS.maxOldGenerationSizeMb,
      });
      // V8's whole heap of the thread: its old space and its young generation.
      const { maxOldGenerationSizeMb, maxYoungGenerationSizeMb } = FOLD_THREAD_RESOURCE_LIMITS;
      expect(members['heapSizeLimit']).toBeLessThanOrEqual(
        (maxOldGenerationSizeMb + maxYoungGenerationSizeMb) * 2 ** 20,
      );
    } finally {
      await fold.close();
      rmSync(file, { force: true });
    }
  });

  it('should fail the answer retryably, naming the limit, when the thread reaches its heap limit', async () => {
    // A thread that keeps what it makes up to twice the fold thread's old space: under that cap it dies
    // on the way, without it (a worker's default, the process's own) it answers.
    const file = threadFile(
      'hungry',
      `const { parentPort } = require('node:worker_threads');
const { getHeapStatistics } = require('node:v8');
const kept = [];
parentPort.on('message', (request) => {
  if (request.type === 'chunk') {
    while (getHeapStatistics().used_heap_size < ${2 * FOLD_THREAD_RESOURCE_LIMITS.maxOldGenerationSizeMb} * 2 ** 20)
      kept.push(Array.from({ length: 10000 }, (_, i) => ({ i })));
    parentPort.postMessage({ type: 'took' });
  }
  if (request.type === 'end')
    parentPort.postMessage({ id: request.id, type: 'end', rest: { members: {}, hasValue: true }, invalid: [] });
});
`,
    );
    const fold = new WorkerExportFold(file);
    try {
      await expect(endOf(fold)).rejects.toMatchObject({
        code: 'EXPORT_FOLD_OUT_OF_MEMORY',
        canRetry: true,
        message: expect.stringContaining(`${FOLD_THREAD_RESOURCE_LIMITS.maxOldGenerationSizeMb} MiB`),
      });
      // What is asked of it afterwards fails alike.
      await expect(fold.fold()).rejects.toMatchObject({ code: 'EXPORT_FOLD_OUT_OF_MEMORY' });
    } finally {
      await fold.close();
      rmSync(file, { force: true });
    }
  });

  /** A thread that ends itself past its heap budget once it has been handed `parts` parts, answering none. */
  function endingThread(parts: number): string {
    return threadFile(
      `ending-${parts}`,
      `const { parentPort } = require('node:worker_threads');
let handed = 0;
parentPort.on('message', (request) => {
  if (request.type === 'chunk' && ++handed >= ${parts}) process.exit(70);
});
`,
    );
  }

  /** Bytes a push hands over to the thread whole, as a part of their own. */
  const part = (): Buffer => Buffer.alloc(1024 * 1024 + 1, 0x20);

  it("should throw the thread's failure from a push at once, so the rest of the answer is not read", async () => {
    const file = endingThread(1);
    const fold = new WorkerExportFold(file);
    try {
      const sink = fold.sink(() => undefined);
      expect(sink.push(part())).toBeUndefined();
      // The thread ended past its budget (asked for the fold, which it never answers).
      await expect(fold.fold()).rejects.toMatchObject({ code: 'EXPORT_FOLD_OUT_OF_MEMORY' });
      expect(() => sink.push(part())).toThrow(expect.objectContaining({ code: 'EXPORT_FOLD_OUT_OF_MEMORY' }));
    } finally {
      await fold.close();
      rmSync(file, { force: true });
    }
  });

  it("should fail a push waiting for the thread to catch up with the thread's failure", async () => {
    // The thread never catches up: the eighth part handed over leaves the push waiting, and ends it.
    const file = endingThread(8);
    const fold = new WorkerExportFold(file);
    try {
      const sink = fold.sink(() => undefined);
      const pushes = Array.from({ length: 8 }, () => sink.push(part()));
      expect(pushes.slice(0, 7)).toEqual(Array.from({ length: 7 }, () => undefined));
      await expect(pushes[7]).rejects.toMatchObject({ code: 'EXPORT_FOLD_OUT_OF_MEMORY' });
    } finally {
      await fold.close();
      rmSync(file, { force: true });
    }
  });

  it('should fail the answer retryably past its heap budget under the deployed flags, which override its limit', () => {
    // The vuln-fetcher's flags, with --max-old-space-size: V8 takes it for the thread's old space too, over
    // the worker's resourceLimits. An export of 150,000 devices folded (~14 MB of ids) by a thread of 16 MiB.
    const flags = (
      JSON.parse(readFileSync(join(__dirname, '../../../deploy/node-flags.json'), 'utf8')) as Record<
        string,
        string[]
      >
    )['vuln-fetcher'];
    expect(flags).toContainEqual(expect.stringMatching(/^--max-old-space-size=/));
    const script = `
const { WorkerExportFold } = require(${JSON.stringify(join(__dirname, '../dist/export-fold.js'))});
const fold = new WorkerExportFold(undefined, 16);
const rows = Array.from({ length: 150000 }, (_, i) =>
  JSON.stringify({ deviceId: i.toString(16).padStart(40, 'a'), cveId: 'CVE-2026-1', cvssScore: 5 }));
const body = Buffer.from('{"value":[' + rows.join(',') + ']}');
const sink = fold.sink(() => undefined);
(async () => {
  for (let at = 0; at < body.length; at += 65536) await sink.push(body.subarray(at, at + 65536));
  await sink.end();
  return (await fold.fold()).size;
})().then(
  (size) => process.stdout.write(JSON.stringify({ folded: size })),
  (error) => process.stdout.write(JSON.stringify({ code: error.code, canRetry: error.canRetry, message: error.message })),
).finally(() => fold.close());
`;
    const outcome = JSON.parse(
      execFileSync(process.execPath, [...(flags ?? []), '-e', script]).toString(),
    ) as {
      code?: string;
    };
    expect(outcome).toMatchObject({
      code: 'EXPORT_FOLD_OUT_OF_MEMORY',
      canRetry: true,
      message: expect.stringContaining('(16 MiB)'),
    });
  });

  it('foldExportOnThread should fold what the client scans, and fail as its scan does', async () => {
    // Compiled, as the thread it starts: the worker next to the module is its `.js` file in `dist`.
    const { foldExportOnThread } = (await import(
      join(__dirname, '../dist/export-fold.js')
    )) as typeof import('../src/export-fold');
    const rows = exportRows(400);
    const invalid: string[] = [];
    const client = {
      async scanVulnerabilitiesByMachine(sink: (report: (reason: string) => void) => ODataSink) {
        const page = sink((reason) => invalid.push(reason));
        page.push(body([...rows, { cveId: 'CVE-1', cvssScore: 5 }]));
        await page.end();
        return { pages: 1 };
      },
    };
    const folded = await foldExportOnThread(client);
    const expected = foldedHere(rows);
    expect(new Map(folded.summaries(7))).toEqual(new Map(expected.summaries(7)));
    expect(invalid).toHaveLength(1);
    const failing = {
      scanVulnerabilitiesByMachine: () => Promise.reject(new Error('the export failed')),
    };
    await expect(foldExportOnThread(failing)).rejects.toThrow('the export failed');
  });
});

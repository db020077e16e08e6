#!/usr/bin/env node
'use strict';
// CPU cost of reading one tenant's bulk export (SoftwareVulnerabilitiesByMachine) the way the vuln-fetcher
// reads it, not a test: the Defender client over TLS against the simulator (a process of its own, latency
// 0, no quotas), every row folded into the vuln-fetcher's VulnerabilityFolder. With `--read machines`, the
// tenant's device listing (/api/machines) the way the poller reads it instead: every listed machine cut
// down to the DeviceRecord a batch carries. Each read runs in a fresh process, so Node flags can be
// compared; variants run in rotating order, medians reported.
// Runs against the compiled packages (`npx tsc -b` first).
//
//   node test/bench/export-read-bench.js [--read export|export-thread|machines] [--page-size N]
//                                        [--limiter local|none|shared|shared-bulk-cap]
//                                        [--devices N] [--rounds R] [--variant 'name=--node-flag …' …]
//     --read     what is read (default export; export-thread: on two threads, as the vuln-fetcher reads it)
//     --page-size  machines per listing request (default the poller's, 10000; --read machines only)
//     --limiter  local (default: a Bottleneck limiter of 10 calls, as the services have) or none; shared: the
//                services' limiter of 10 calls in Redis (REDIS_URL, keys under a prefix of the read's own,
//                expiring a minute after), with the vuln-fetcher's hand-off; shared-bulk-cap: the same with the
//                vuln-fetcher's cap on bulk export pages (5 of the 10 slots)
//     --devices  fleet size (default 50000; about half the devices have vulnerabilities)
//     --rounds   reads per variant (default 3)
//     --variant  a name and the Node flags of its processes (default: base=--single-threaded-gc, the
//                vuln-fetcher's deployed collector setting); repeat to compare
//
// Reported per read: process CPU and wall time of the read, the garbage collector's pauses (perf_hooks
// 'gc' entries: pauses only, not the incremental marking between them), rows, devices, RSS afterwards; with
// --read export-thread also the fold thread's peak heap in use and held, its peak memory outside the heap,
// and its heap limit, in MiB (fold-heap-worker.js).

const { spawn, spawnSync } = require('node:child_process');
const { readFileSync, rmSync } = require('node:fs');
const { request } = require('node:https');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { parseArgs } = require('node:util');

const root = join(__dirname, '../..');
const TENANT = '8f6d2c1e-3b4a-4c5d-9e8f-0a1b2c3d4e5f';
const APP = { clientId: '1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d', clientSecret: 'Zx8Q~export-read-bench' };

const { values } = parseArgs({
  options: {
    read: { type: 'string' },
    'page-size': { type: 'string' },
    limiter: { type: 'string' },
    devices: { type: 'string' },
    rounds: { type: 'string' },
    variant: { type: 'string', multiple: true },
    child: { type: 'boolean' },
  },
});

for (const [option, allowed] of [
  ['read', ['export', 'export-thread', 'machines']],
  ['limiter', ['local', 'none', 'shared', 'shared-bulk-cap']],
]) {
  if (values[option] !== undefined && !allowed.includes(values[option])) {
    console.error(`--${option} must be one of ${allowed.join(', ')} (got ${values[option]})`);
    process.exit(2);
  }
}

if (values.child) {
  read().catch((error) => {
    console.error(error);
    process.exit(1);
  });
} else {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}

/** One read of the export, in this process; prints its numbers as one JSON line. */
async function read() {
  const { PerformanceObserver, performance } = require('node:perf_hooks');
  const { createDefenderClient, createLocalLimiter, UNLIMITED_QUOTA_GATE } = require(
    join(root, 'libs/defender/dist'),
  );
  const { silentLogger } = require(join(root, 'libs/logging/dist'));
  let gcMs = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) gcMs += entry.duration;
  }).observe({ entryTypes: ['gc'] });
  const base = process.env.SIM_BASE;
  const shared = process.env.LIMITER.startsWith('shared') ? await sharedLimiter(silentLogger) : undefined;
  const client = createDefenderClient(
    { azureTenantId: TENANT, ...APP },
    {
      // `none`: each call runs at once, outside any limiter, to compare with the Bottleneck limiter.
      limiter:
        shared?.limiter ??
        (process.env.LIMITER === 'none'
          ? { schedule: (task) => task(), close: async () => undefined }
          : createLocalLimiter()),
      quota: UNLIMITED_QUOTA_GATE,
      logger: silentLogger,
      overrides: { authorityHost: base, apiBase: base },
    },
  );
  await client.tokenClaims(); // the token, outside the measured read
  const cpu = process.cpuUsage();
  const started = performance.now();
  const reads = { machines: listMachines, export: readExport, 'export-thread': readExportOnThread };
  const { rows, devices, ...fold } = await reads[process.env.READ](client);
  const used = process.cpuUsage(cpu);
  const wallMs = performance.now() - started;
  client.close();
  await shared?.close();
  console.log(
    JSON.stringify({
      cpuMs: Math.round((used.user + used.system) / 1000),
      wallMs: Math.round(wallMs),
      gcPauseMs: Math.round(gcMs),
      rows,
      devices,
      rssMb: Math.round(process.memoryUsage().rss / 1048576),
      ...fold,
    }),
  );
}

/**
 * The services' limiter in Redis (`--limiter shared`, `shared-bulk-cap`), as the vuln-fetcher makes it, under a
 * key prefix of this read's own whose keys expire a minute after the read.
 */
async function sharedLimiter(logger) {
  const { createSharedLimiter } = require(join(root, 'libs/defender/dist'));
  const { closeRedis, createRedis } = require(join(root, 'libs/store/dist'));
  const redis = createRedis({ url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' });
  const limiter = await createSharedLimiter({
    redis,
    keyPrefix: `export-read-bench-${process.pid}-${Date.now().toString(36)}:`,
    maxConcurrent: 10,
    ...(process.env.LIMITER === 'shared-bulk-cap' ? { bulkMaxSlots: 5 } : {}),
    handOff: { maxLeaseMs: 1_000 },
    keyTtlMs: 60_000,
    logger,
  });
  return {
    limiter,
    async close() {
      await limiter.close();
      await closeRedis(redis);
    },
  };
}

/** The export folded as the vuln-fetcher folds it: its rows, and the devices with vulnerabilities. */
async function readExport(client) {
  const { VulnerabilityFolder } = require(join(root, 'services/vuln-fetcher/dist/summarise'));
  const folder = new VulnerabilityFolder();
  const result = await client.readVulnerabilitiesByMachine((deviceId, vulnerability) =>
    folder.add(deviceId, vulnerability),
  );
  return { rows: result.rows, devices: folder.size };
}

/**
 * The export as the vuln-fetcher reads it by default: this thread takes the answer off the socket and a
 * fold thread (WorkerExportFold) scans and folds the rows. The CPU reported is both threads'; the GC
 * pauses are this thread's.
 */
async function readExportOnThread(client) {
  const { WorkerExportFold } = require(join(root, 'services/vuln-fetcher/dist/export-fold'));
  // As foldExportOnThread, on the fold thread with its heap's peak sampled (fold-heap-worker.js).
  const heapFile = join(tmpdir(), `export-read-bench-fold-heap-${process.pid}.json`);
  process.env.FOLD_HEAP_FILE = heapFile;
  const fold = new WorkerExportFold(join(__dirname, 'fold-heap-worker.js'));
  let devices;
  try {
    await client.scanVulnerabilitiesByMachine(fold.sink);
    devices = (await fold.fold()).size;
  } finally {
    await fold.close();
  }
  const heap = JSON.parse(readFileSync(heapFile, 'utf8'));
  rmSync(heapFile, { force: true });
  // The rows are counted on the fold thread, which does not report them.
  return {
    devices,
    foldHeapUsedMb: heap.usedMb,
    foldHeapTotalMb: heap.totalMb,
    foldExternalMb: heap.externalMb,
    foldHeapLimitMb: heap.limitMb,
  };
}

/** The device listing as the poller takes it: machines read, and the device records made of them. */
async function listMachines(client) {
  const { toDeviceRecord } = require(join(root, 'libs/contracts/dist'));
  let rows = 0;
  let devices = 0;
  const pageSize = Number(process.env.PAGE_SIZE);
  for await (const page of client.listMachinePages(pageSize > 0 ? { pageSize } : {})) {
    rows += page.received;
    for (const entry of page.machines) if (toDeviceRecord(entry.record).id) devices++;
  }
  return { rows, devices };
}

/** Starts the simulator, adds the tenant, runs the reads in rotating order and prints the medians. */
async function main() {
  const devices = Number(values.devices ?? 50_000);
  const rounds = Number(values.rounds ?? 3);
  const variants = (values.variant ?? ['base=--single-threaded-gc']).map((spec) => {
    const at = spec.indexOf('=');
    const flags = at < 0 ? '' : spec.slice(at + 1);
    return { name: at < 0 ? spec : spec.slice(0, at), flags: flags.split(' ').filter(Boolean) };
  });
  const sim = spawn(
    process.execPath,
    [
      join(root, 'test/simulator/dist/main.js'),
      ...['--port', '0', '--host', '127.0.0.1', '--latency', '0:0', '--quotas', 'off'],
      ...['--ca-dir', join(tmpdir(), `export-read-bench-${process.pid}`)],
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  try {
    const { baseUrl, caFile } = await announced(sim);
    const ca = readFileSync(caFile);
    await control(baseUrl, ca, '/_sim/tenants', {
      azureTenantId: TENANT,
      apps: [APP],
      fleet: { size: devices, seed: 7 },
    });
    const results = new Map(variants.map((variant) => [variant.name, []]));
    for (let round = 0; round < rounds; round++) {
      for (const variant of variants) {
        const child = spawnSync(process.execPath, [...variant.flags, __filename, '--child'], {
          env: {
            ...process.env,
            SIM_BASE: baseUrl,
            NODE_EXTRA_CA_CERTS: caFile,
            READ: values.read ?? 'export',
            PAGE_SIZE: values['page-size'] ?? '',
            LIMITER: values.limiter ?? 'local',
          },
          encoding: 'utf8',
        });
        if (child.status !== 0) throw new Error(`the read failed:\n${child.stderr}`);
        const numbers = JSON.parse(child.stdout.trim().split('\n').pop());
        results.get(variant.name).push(numbers);
        console.log(variant.name, JSON.stringify(numbers));
      }
    }
    const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
    for (const [name, list] of results) {
      const of = (key) => median(list.map((numbers) => numbers[key]));
      const rows = list[0].rows;
      console.log(
        `${name}: median CPU ${of('cpuMs')} ms` +
          (rows > 0 ? ` (${((of('cpuMs') * 1000) / rows).toFixed(2)} µs per row), ` : ', ') +
          `wall ${of('wallMs')} ms, GC pauses ${of('gcPauseMs')} ms, RSS ${of('rssMb')} MB; ` +
          (values.read === 'machines'
            ? `${rows} machines read, ${list[0].devices} device records`
            : `${rows > 0 ? `${rows} rows, ` : ''}${list[0].devices} devices with vulnerabilities`),
      );
    }
  } finally {
    sim.kill();
  }
}

/** The simulator's first stdout line: `{"baseUrl":…,"caFile":…}`. */
function announced(sim) {
  return new Promise((resolve, reject) => {
    let text = '';
    sim.stdout.on('data', (chunk) => {
      text += chunk;
      const line = text.split('\n').find((candidate) => candidate.includes('"baseUrl"'));
      if (line) resolve(JSON.parse(line));
    });
    sim.on('exit', (code) => reject(new Error(`the simulator exited (${code})`)));
  });
}

/** A POST to the simulator's control API. */
function control(baseUrl, ca, path, body) {
  return new Promise((resolve, reject) => {
    const call = request(
      `${baseUrl}${path}`,
      { method: 'POST', ca, headers: { 'content-type': 'application/json' } },
      (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode < 300 ? resolve() : reject(new Error(`${path}: ${res.statusCode}`)),
        );
      },
    );
    call.on('error', reject);
    call.end(JSON.stringify(body));
  });
}

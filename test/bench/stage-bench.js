#!/usr/bin/env node
'use strict';
// CPU of the scorer's and the publisher's own per-batch work in one process, not a test: the publisher's
// handler on a consumed scored batch (its records built, validated and encoded for the producer, which
// sends nothing; Redis answered at once: every device changed), the scorer's save of a scored batch's
// scores (the save command's arguments built; Redis answered at once), and the scorer's handler on a
// consumed enriched batch (scoring, serialising, the save's arguments, the scored batch encoded). Devices as in codec-bench.js (the
// simulator's machines, seed 7), batches of 500, CPU per device in µs over 9 passes over the batches (their
// median and their least).
// Runs against the compiled packages (`npx tsc -b` first).
//
//   node --expose-gc test/bench/stage-bench.js [--devices N] [--rounds N] [--only publish|consume|save|score]
//     --only  one measure alone (each leaves garbage that the next one's collections would pay for)
// With --expose-gc, each pass starts after a full collection.

const { join } = require('node:path');
const { parseArgs } = require('node:util');

const root = join(__dirname, '../..');
const contracts = require(join(root, 'libs/contracts/dist'));
const bus = require(join(root, 'libs/bus/dist'));
const defender = require(join(root, 'libs/defender/dist'));
const scoring = require(join(root, 'libs/scoring/dist'));
const store = require(join(root, 'libs/store/dist'));
const { silentLogger } = require(join(root, 'libs/logging/dist'));
const { Registry } = require(join(root, 'libs/telemetry/dist'));
const { generateMachine } = require(join(root, 'test/simulator/dist/generator'));
const { toScoredDevice } = require(join(root, 'services/scorer/dist/scored-device'));
const { createPublishHandler } = require(join(root, 'services/publisher/dist/handler'));
const { createScoreHandler } = require(join(root, 'services/scorer/dist/handler'));

const { values } = parseArgs({
  options: { devices: { type: 'string' }, rounds: { type: 'string' }, only: { type: 'string' } },
});
const BATCH = 500;
const batches = Math.max(1, Math.round(Number(values.devices ?? 10_000) / BATCH));
const devices = batches * BATCH;
const rounds = Number(values.rounds ?? 9);
const now = Date.parse('2026-12-04T12:00:00.000Z');
const at = (ms) => new Date(ms).toISOString();
const profile = scoring.compileProfile(scoring.DEFAULT_PROFILE);
const collectedAt = at(now + 5_000);
const scoredAt = at(now + 6_000);

/** Each batch's scored devices and the bytes of its `urs.device-scores` message, and its enriched batch. */
function scoredBatches() {
  const out = [];
  const enriched = [];
  for (let batchIndex = 0; batchIndex < batches; batchIndex++) {
    const scored = [];
    const items = [];
    for (let n = 0; n < BATCH; n++) {
      const parsed = defender.parseMachine(generateMachine(7, batchIndex * BATCH + n, now));
      if (!parsed.ok) throw new Error(parsed.reason);
      const machine = contracts.toDeviceRecord(parsed.value);
      const vulnerabilities = {
        criticalCveCount: n % 4,
        totalCveCount: 3 + (n % 9),
        maxCvss: n % 4 === 0 ? 6.5 : 9.8,
        cvssThreshold: 7,
        topCveIds: ['CVE-2024-21338', 'CVE-2024-30088', 'CVE-2023-36884'].slice(0, n % 4),
      };
      const result = scoring.scoreDevice(
        machine,
        { criticalCveCount: vulnerabilities.criticalCveCount, fetchedAt: collectedAt },
        profile,
        now,
      );
      scored.push(toScoredDevice({ machine, vulnerabilities }, result));
      items.push({ machine, vulnerabilities });
    }
    const header = {
      schemaVersion: 1,
      tenantId: 't-1',
      cycleId: 'c-1',
      cycleStartedAt: at(now),
      batchIndex,
      lastBatch: false,
      collectedAt,
      scoredAt,
    };
    out.push({ header, devices: scored, bytes: bus.deviceBatchMessage('t-1', header, scored).json });
    const enrichedHeader = { ...header, vulnerabilityMode: 'bulk' };
    delete enrichedHeader.scoredAt;
    enriched.push(bus.deviceBatchMessage('t-1', enrichedHeader, items).json);
  }
  return { list: out, enriched };
}

/** CPU per device of `pass` in µs: the median and the least of the passes (on a shared machine, the least is the steadier). */
async function perDevice(pass) {
  const samples = [];
  for (let round = 0; round < rounds; round++) {
    global.gc?.();
    const cpu = process.cpuUsage();
    await pass();
    const used = process.cpuUsage(cpu);
    samples.push((used.user + used.system) / devices);
  }
  samples.sort((a, b) => a - b);
  return { median: samples[Math.floor(rounds / 2)], least: samples[0] };
}

/** A publisher whose producer sends nothing: what `send` does before the request is encoded. */
async function quietPublisher() {
  const producer = {
    connect: async () => undefined,
    disconnect: async () => undefined,
    send: async () => [],
  };
  return bus.createPublisher({ producer: () => producer });
}

async function main() {
  const { list, enriched } = scoredBatches();
  const publisher = await quietPublisher();
  const handler = createPublishHandler({
    cycles: { recordBatch: async () => ({ first: true, state: { kind: 'open' } }) },
    published: { changed: async (_lease, _at, refs) => refs, renewTenantLease: async () => true },
    completion: { tryComplete: async () => undefined },
    inOrder: (_tenantId, work) => work(),
    leasing: { holder: 'bench', ttlMs: 10_000 },
    publisher,
    topic: 'vms.risk-scores',
    logger: silentLogger,
    metrics: new Registry({ processMetrics: false }),
  });
  const redis = { eval: async () => [[], [], 0, []], unlink: async () => 0 };
  const scores = store.createScoreStore(redis, 'bench:', { onlyRegisteredTenants: true });
  const scorer = createScoreHandler({
    profiles: { get: async () => profile },
    scores,
    publisher,
    topic: 'urs.device-scores',
    logger: silentLogger,
    metrics: new Registry({ processMetrics: false }),
    now: () => new Date(now + 6_000),
  });
  // A consumed batch: read by lines (its devices' bytes kept) and validated, as the bus hands it over.
  const consume = (bytes) => contracts.validateMessage('urs/score-batch', bus.parseJsonBytes(bytes));
  const cycle = { cycleId: 'c-1', cycleStartedAt: at(now), collectedAt, scoredAt };
  const measures = {
    consume: [
      'publisher: consume (parse by lines + validate)',
      () => () => list.forEach(({ bytes }) => consume(bytes)),
    ],
    publish: [
      'publisher: handler (records, digests, encode)',
      () => {
        const consumed = list.map(({ bytes }) => consume(bytes));
        return async () => {
          for (const batch of consumed) await handler({ value: batch });
        };
      },
    ],
    save: [
      "scorer:    saveScores (the command's arguments)",
      () => {
        const json = list.map(({ devices: items }) =>
          items.map((device) => Buffer.from(JSON.stringify(device))),
        );
        return async () => {
          for (let index = 0; index < list.length; index++)
            await scores.saveScores('t-1', cycle, list[index].devices, json[index]);
        };
      },
    ],
    score: [
      'scorer:    handler (scores, JSON, save, encode)',
      () => {
        const toScore = enriched.map((bytes) =>
          contracts.validateMessage('urs/enriched-batch', bus.parseJsonBytes(bytes)),
        );
        return async () => {
          for (const batch of toScore) await scorer({ value: batch });
        };
      },
    ],
  };
  const chosen = values.only === undefined ? Object.keys(measures) : values.only.split(',');
  console.log(
    `${devices} devices, batches of ${BATCH}; CPU per device in µs, median and least of ${rounds} passes`,
  );
  for (const name of chosen) {
    const measure = measures[name];
    if (!measure) throw new Error(`--only: no measure ${name}`);
    const [label, prepare] = measure;
    const { median, least } = await perDevice(prepare());
    console.log(`${label.padEnd(46)} ${median.toFixed(2).padStart(7)} ${least.toFixed(2).padStart(7)}`);
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

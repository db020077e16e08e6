#!/usr/bin/env node
'use strict';
// CPU a device costs in each stage's own JavaScript work on a message, not a test: reading a batch by
// lines (`parseJsonBytes`), checking it against its contract (`validateMessage`), serialising the device,
// and scoring it. Devices are the simulator's machines (seed 7) as the pipeline carries them: the
// poller's DeviceRecord, the vuln-fetcher's enriched device, the scorer's scored device. Batches of 500
// devices, one process, medians of 7 passes over the fleet. What is left of the pipeline's CPU per device
// beyond these (see `npm run bench`) is the Kafka and Redis clients and servers, the HTTP reads, the
// collector, and the simulator.
// Runs against the compiled packages (`npx tsc -b` first).
//
//   node --single-threaded-gc test/bench/codec-bench.js [--devices N]
//     --devices  devices per pass (default 20000)

const { join } = require('node:path');
const { parseArgs } = require('node:util');

const root = join(__dirname, '../..');
const contracts = require(join(root, 'libs/contracts/dist'));
const bus = require(join(root, 'libs/bus/dist'));
const defender = require(join(root, 'libs/defender/dist'));
const scoring = require(join(root, 'libs/scoring/dist'));
const { generateMachine } = require(join(root, 'test/simulator/dist/generator'));
const { toScoredDevice } = require(join(root, 'services/scorer/dist/scored-device'));

const { values } = parseArgs({ options: { devices: { type: 'string' } } });
const BATCH = 500;
const wanted = Number(values.devices ?? 20_000);
if (!Number.isInteger(wanted) || wanted < 1) {
  console.error(`--devices must be a whole number of at least 1 (got ${values.devices})`);
  process.exit(2);
}
const batches = Math.max(1, Math.round(wanted / BATCH));
const devices = batches * BATCH;
const now = Date.parse('2026-12-04T12:00:00.000Z');
const at = (ms) => new Date(ms).toISOString();
const cycle = {
  schemaVersion: 1,
  tenantId: 't-1',
  cycleId: 'c-1',
  cycleStartedAt: at(now),
  lastBatch: false,
};
const profile = scoring.compileProfile(scoring.DEFAULT_PROFILE);

/** The fleet as each topic carries it: the headers and devices of every batch, per topic. */
function fleet() {
  const topics = { 'urs/device-batch': [], 'urs/enriched-batch': [], 'urs/score-batch': [] };
  for (let batchIndex = 0; batchIndex < batches; batchIndex++) {
    const records = [];
    for (let n = 0; n < BATCH; n++) {
      const parsed = defender.parseMachine(generateMachine(7, batchIndex * BATCH + n, now));
      if (!parsed.ok) throw new Error(parsed.reason);
      records.push(contracts.toDeviceRecord(parsed.value));
    }
    const header = { ...cycle, batchIndex, vulnerabilityMode: 'bulk' };
    topics['urs/device-batch'].push({ header: { ...header, cvssThreshold: 7 }, devices: records });
    const enriched = records.map((machine, n) => ({
      machine,
      vulnerabilities: {
        criticalCveCount: n % 4,
        totalCveCount: 3 + (n % 9),
        maxCvss: n % 4 === 0 ? 6.5 : 9.8,
        cvssThreshold: 7,
        topCveIds: ['CVE-2024-21338', 'CVE-2024-30088', 'CVE-2023-36884'].slice(0, n % 4),
      },
    }));
    const collectedAt = at(now + 5_000);
    topics['urs/enriched-batch'].push({ header: { ...header, collectedAt }, devices: enriched });
    topics['urs/score-batch'].push({
      header: { ...cycle, batchIndex, collectedAt, scoredAt: at(now + 6_000) },
      devices: enriched.map((device) => score(device, collectedAt)),
    });
  }
  return topics;
}

function score(device, collectedAt) {
  const vulnerabilities = {
    criticalCveCount: device.vulnerabilities.criticalCveCount,
    fetchedAt: collectedAt,
  };
  return toScoredDevice(device, scoring.scoreDevice(device.machine, vulnerabilities, profile, now));
}

/** Median CPU per device of `pass` (one pass over the fleet), in µs. */
function perDevice(pass) {
  const samples = [];
  for (let round = 0; round < 7; round++) {
    const cpu = process.cpuUsage();
    pass();
    const used = process.cpuUsage(cpu);
    samples.push((used.user + used.system) / devices);
  }
  return samples.sort((a, b) => a - b)[3];
}

const topics = fleet();
const rows = [];
let total = 0;
for (const [contract, list] of Object.entries(topics)) {
  const bytes = list.map(
    ({ header, devices: items }) => bus.deviceBatchMessage(header.tenantId, header, items).json,
  );
  const messages = list.map(({ header, devices: items }) => ({ ...header, devices: items }));
  const row = {
    contract,
    bytesPerDevice: Math.round(bytes.reduce((sum, json) => sum + json.length, 0) / devices),
    parse: perDevice(() => bytes.forEach((json) => bus.parseJsonBytes(json))),
    validate: perDevice(() => messages.forEach((message) => contracts.validateMessage(contract, message))),
    stringify: perDevice(() =>
      list.forEach(({ devices: items }) => items.forEach((item) => JSON.stringify(item))),
    ),
  };
  // Each message is serialised once, validated on produce and on consume, and parsed once.
  row.perHop = row.parse + 2 * row.validate + row.stringify;
  total += row.perHop;
  rows.push(row);
}
const scoreBatches = topics['urs/enriched-batch'];
const scoring_ = perDevice(() =>
  scoreBatches.forEach(({ header, devices: items }) =>
    items.forEach((item) => score(item, header.collectedAt)),
  ),
);
const vmsRecords = topics['urs/score-batch'].flatMap(({ header, devices: items }) =>
  items.map((device) => contracts.vmsRecord(header.tenantId, header.cycleId, header.scoredAt, device).value),
);
const vmsValidate = perDevice(() =>
  vmsRecords.forEach((record) => contracts.validateMessage('urs/vms-risk-score', record)),
);
total += scoring_ + vmsValidate;

const fixed = (value) => value.toFixed(2).padStart(7);
console.log(`${devices} devices, batches of ${BATCH}; CPU per device in µs (medians of 7 passes)`);
console.log(
  'contract              bytes    parse validate stringify  per hop (parse + 2 × validate + stringify)',
);
for (const row of rows) {
  console.log(
    `${row.contract.padEnd(20)} ${String(row.bytesPerDevice).padStart(6)} ${fixed(row.parse)} ${fixed(row.validate)} ${fixed(row.stringify)}  ${fixed(row.perHop)}`,
  );
}
console.log(`scoring (scoreDevice + toScoredDevice): ${fixed(scoring_)}`);
console.log(`vms.risk-scores record validated:       ${fixed(vmsValidate)}`);
console.log(`all of a device's message work:         ${fixed(total)}`);

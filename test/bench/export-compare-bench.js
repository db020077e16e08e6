#!/usr/bin/env node
'use strict';
// Wall time of comparing a bulk export with the tenant's latest one in Redis (`compare` of the bulk
// vulnerability cache, what a bulk cycle's last batch does before its corrections go out), not a test.
// Runs against the compiled package (`npx tsc -b` first) and the Redis at REDIS_URL (default
// redis://127.0.0.1:6379), under a prefix of its own that it deletes at the end.
//
//   node test/bench/export-compare-bench.js [--devices N] [--rounds R]
//     --devices  summaries in the stored export (default 54000: a 100,000-device fleet's devices with CVEs)
//     --rounds   compares per case (default 7), after a first round that warms the code up; the cases take
//                turns, and the median and the range of each are reported
//
// Cases: the same export again (Microsoft regenerates it every 6 hours, so most cycles read the one the
// cycle before read), and one with 1 % of the devices changed and 0.5 % gone.

const { parseArgs } = require('node:util');
const Redis = require('ioredis');
const { createBulkVulnerabilityCache } = require('@urs/store');

const { values } = parseArgs({ options: { devices: { type: 'string' }, rounds: { type: 'string' } } });
const DEVICES = Number(values.devices ?? 54_000);
const ROUNDS = Number(values.rounds ?? 7);

const deviceId = (i) => i.toString(16).padStart(40, '0');
const summaryOf = (i, changed) => ({
  criticalCveCount: (i + (changed ? 1 : 0)) % 3,
  totalCveCount: (i * 7) % 40,
  maxCvss: 9.8,
  cvssThreshold: 9,
  topCveIds: [`CVE-2024-${1000 + (i % 500)}`, `CVE-2023-${2000 + (i % 300)}`],
});

/** The export in slices of 1,000 summaries as JSON, as the vuln-fetcher compares them. */
function* slicesOf(changedEvery, goneEvery) {
  let slice = [];
  for (let i = 0; i < DEVICES; i++) {
    if (goneEvery > 0 && i % goneEvery === 7) continue;
    const changed = changedEvery > 0 && i % changedEvery === 3;
    slice.push([deviceId(i), JSON.stringify(summaryOf(i, changed))]);
    if (slice.length === 1000) {
      yield slice;
      slice = [];
    }
  }
  if (slice.length > 0) yield slice;
}

async function main() {
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  const prefix = `bench-compare-${process.pid}:`;
  try {
    const cache = createBulkVulnerabilityCache(redis, prefix);
    const stored = Array.from({ length: DEVICES }, (_, i) => [deviceId(i), summaryOf(i, false)]);
    await cache.save('t', 'latest', stored, new Date().toISOString());
    const cases = { 'the same export': [0, 0], '1 % changed, 0.5 % gone': [100, 200] };
    const times = Object.fromEntries(Object.keys(cases).map((name) => [name, []]));
    const named = {};
    // The cases take turns, so each meets the process (its heap, its compiled code) in the same state.
    for (let round = 0; round <= ROUNDS; round++) {
      for (const [name, [changedEvery, goneEvery]] of Object.entries(cases)) {
        const started = process.hrtime.bigint();
        named[name] = 0;
        for await (const part of cache.compare('t', 'latest', slicesOf(changedEvery, goneEvery)))
          named[name] += part.length;
        if (round > 0) times[name].push(Number(process.hrtime.bigint() - started) / 1e6);
      }
    }
    for (const [name, list] of Object.entries(times)) {
      list.sort((a, b) => a - b);
      const median = list[Math.floor(list.length / 2)];
      console.log(
        `${name}: median ${median.toFixed(0)} ms (${list[0].toFixed(0)}–${list.at(-1).toFixed(0)}), ` +
          `${named[name]} devices to correct, ${DEVICES} stored`,
      );
    }
  } finally {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});

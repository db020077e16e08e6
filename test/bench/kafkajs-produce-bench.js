#!/usr/bin/env node
'use strict';
// CPU cost of encoding produce requests, not a test: KafkaJS as it ships, with the bus's crc32c only
// (useFastCrc32c), and with all of the bus's fixes (applyKafkaJsFixes: also one-pass record batches and
// large parts referenced, useFastRecordBatches). Each side runs in a process of its own (the fixes are
// installed per process), in rotating order; medians reported.
// Runs against the compiled package (`npx tsc -b` first).
//
//   node test/bench/kafkajs-produce-bench.js [--requests N] [--rounds R]
//     --requests  requests encoded per round and case (default 300)
//     --rounds    rounds per side, alternating (default 5)
//
// Cases: one batch message of ~0.8 MB (a device batch, as bytes), and 500 records of ~1.7 KB (a
// publisher's vms.risk-scores records, as text), both keyed, in one partition.

const { spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');

const { values } = parseArgs({
  options: { requests: { type: 'string' }, rounds: { type: 'string' }, child: { type: 'string' } },
});
const REQUESTS = Number(values.requests ?? 300);
const ROUNDS = Number(values.rounds ?? 5);

function cases() {
  const device = (i) =>
    JSON.stringify({
      deviceId: `${(i * 2654435761) >>> 0}`.padStart(40, 'a'),
      computerDnsName: `host-${i}.contoso.com`,
      score: i % 100,
      band: 'Moderate Risk',
      contributions: Array.from({ length: 8 }, (_, n) => ({ group: 'critical', signal: `s${n}`, points: n })),
      padding: 'x'.repeat(1200),
    });
  const batch = Buffer.from(
    `{"tenantId":"t","devices":[\n${Array.from({ length: 500 }, (_, i) => device(i)).join(',\n')}\n]}`,
  );
  return {
    'one 0.8 MB batch message': [{ key: 'tenant-1', value: batch.subarray(0, 800_000) }],
    '500 records of 1.7 KB': Array.from({ length: 500 }, (_, i) => ({
      key: `tenant-1/${i}`,
      value: device(i),
    })),
  };
}

async function child(side) {
  if (side === 'crc32c') require('../../libs/bus/dist/crc32c').useFastCrc32c();
  if (side === 'fixed') require('../../libs/bus/dist/kafkajs-fixes').applyKafkaJsFixes();
  const produce = require('kafkajs/src/protocol/requests/produce/v3/request');
  const createRequest = require('kafkajs/src/protocol/request');
  const encode = async (messages) => {
    const request = produce({
      acks: -1,
      timeout: 30_000,
      compression: 0,
      topicData: [{ topic: 'vms.risk-scores', partitions: [{ partition: 0, firstSequence: 0, messages }] }],
    });
    const payload = await createRequest({ correlationId: 1, clientId: 'bench', request });
    return payload.buffer.length; // what the connection reads before writing to the socket
  };
  const result = {};
  for (const [name, messages] of Object.entries(cases())) {
    for (let i = 0; i < 30; i++) await encode(messages);
    const cpu = process.cpuUsage();
    for (let i = 0; i < REQUESTS; i++) await encode(messages);
    const used = process.cpuUsage(cpu);
    result[name] = (used.user + used.system) / 1000 / REQUESTS;
  }
  process.stdout.write(JSON.stringify(result));
}

function median(numbers) {
  const sorted = [...numbers].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

function main() {
  const sides = ['stock', 'crc32c', 'fixed'];
  const runs = { stock: [], crc32c: [], fixed: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const side of [...sides.slice(round % 3), ...sides.slice(0, round % 3)]) {
      const run = spawnSync(process.execPath, [__filename, '--child', side, '--requests', String(REQUESTS)], {
        encoding: 'utf8',
      });
      if (run.status !== 0) throw new Error(`${side} run failed: ${run.stderr}`);
      runs[side].push(JSON.parse(run.stdout));
    }
  }
  console.log(`CPU ms per produce request, median of ${ROUNDS} runs of ${REQUESTS} requests`);
  for (const name of Object.keys(runs.stock[0])) {
    const [stock, crc, fixed] = sides.map((side) => median(runs[side].map((r) => r[name])));
    console.log(
      `${name.padEnd(26)} KafkaJS ${stock.toFixed(2)}  crc32c only ${crc.toFixed(2)}  all fixes ${fixed.toFixed(2)}` +
        `  (${(crc / fixed).toFixed(1)}× less than crc32c only)`,
    );
  }
}

if (values.child) {
  child(values.child).catch((error) => {
    console.error(error);
    process.exit(1);
  });
} else {
  main();
}

'use strict';
// The vuln-fetcher's export fold thread (services/vuln-fetcher/dist/export-fold-worker.js), its heap sampled
// before and after each message it handles, for export-read-bench.js --read export-thread: each new peak of
// the heap in use, of the heap V8 holds and of the memory outside it (the parts handed over, the fold's typed
// arrays), in MiB, is written to FOLD_HEAP_FILE as JSON. Sampling
// at each message sees the garbage a part's scan left before the next collection takes it.

const { writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { getHeapStatistics } = require('node:v8');
const { parentPort } = require('node:worker_threads');

const file = process.env.FOLD_HEAP_FILE;
const peak = {
  usedMb: 0,
  totalMb: 0,
  externalMb: 0,
  limitMb: Math.round(getHeapStatistics().heap_size_limit / 2 ** 20),
};

function sample() {
  const stats = getHeapStatistics();
  const usedMb = Math.ceil(stats.used_heap_size / 2 ** 20);
  const totalMb = Math.ceil(stats.total_heap_size / 2 ** 20);
  const externalMb = Math.ceil(stats.external_memory / 2 ** 20);
  if (usedMb <= peak.usedMb && totalMb <= peak.totalMb && externalMb <= peak.externalMb) return;
  peak.usedMb = Math.max(peak.usedMb, usedMb);
  peak.totalMb = Math.max(peak.totalMb, totalMb);
  peak.externalMb = Math.max(peak.externalMb, externalMb);
  if (file) writeFileSync(file, JSON.stringify(peak));
}

// Listeners run in the order added: one before the fold thread's own, one after it.
parentPort.on('message', sample);
require(join(__dirname, '../../services/vuln-fetcher/dist/export-fold-worker.js'));
parentPort.on('message', sample);
sample();

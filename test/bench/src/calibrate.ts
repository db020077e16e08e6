import { performance } from 'node:perf_hooks';

/**
 * How fast the machine runs now, by a fixed workload in the bench's own process: the same JavaScript
 * work whatever the code under test, so two runs' numbers can be told apart from the machine's own speed
 * (on the 2-core build VM the same code has run ~1.3× slower an hour later, every process alike).
 * The work is what the pipeline does most: JSON serialised and parsed (1,000 device-like objects, one
 * at a time, 10 times), allocation and its garbage, and an integer loop over the text (FNV-1a).
 */
export interface Calibration {
  /** Median wall time of a round, ms: lower is faster. */
  medianMs: number;
  /** Every round's wall time, ms. */
  roundsMs: number[];
}

export const CALIBRATION_WORKLOAD =
  'JSON.stringify and JSON.parse of 1,000 device-like objects (~1.5 KB each) one at a time, 10 times, with FNV-1a over the text';

const OBJECTS = 1_000;
const PASSES = 10;

/** The workload's input: the same objects every time. */
function deviceLike(index: number): Record<string, unknown> {
  const id = (index * 2_654_435_761) >>> 0;
  return {
    deviceId: `${id.toString(16).padStart(8, '0')}${'0'.repeat(32)}`,
    computerDnsName: `host-${index}.corp.example.com`,
    lastIpAddress: `10.${(index >> 8) & 255}.${index & 255}.1`,
    machineTags: ['tier-1', `site-${index % 7}`],
    score: index % 101,
    band: ['Trustworthy', 'Low Risk', 'Medium Risk', 'Elevated Risk', 'High Risk'][index % 5],
    contributions: Array.from({ length: 8 }, (_, n) => ({
      group: n < 4 ? 'critical' : 'operational',
      signal: `signal-${n}`,
      value: (index + n) % 3 === 0 ? null : `value-${(index * n) % 11}`,
      points: ((index + n) % 17) / 3,
      assumed: (index + n) % 5 === 0,
    })),
    signals: Object.fromEntries(
      Array.from({ length: 6 }, (_, n) => [
        `signal-${n}`,
        { value: n % 2 === 0 ? `v${index % 9}` : index % 13, at: '2026-12-01T10:00:00.000Z' },
      ]),
    ),
    vulnerabilities: {
      criticalCveCount: index % 4,
      totalCveCount: index % 23,
      maxCvss: (index % 100) / 10,
      topCveIds: Array.from({ length: index % 6 }, (_, n) => `CVE-2026-${1000 + ((index + n) % 9000)}`),
    },
  };
}

/** The workload's size: the bench always runs the default; a smaller one only checks the code. */
export interface CalibrationSize {
  objects: number;
  passes: number;
}

const WORKLOAD: CalibrationSize = { objects: OBJECTS, passes: PASSES };

/** One round of the workload; answers a digest of its output, the same every time. */
export function calibrationRound(size: CalibrationSize = WORKLOAD): number {
  const objects = Array.from({ length: size.objects }, (_, index) => deviceLike(index));
  let digest = 0x811c9dc5;
  // One object at a time, as the pipeline handles a device: no large strings, whose fresh memory costs
  // the build VM a varying price of its own (page faults), which would blur the measure.
  for (let pass = 0; pass < size.passes; pass++) {
    for (const object of objects) {
      const text = JSON.stringify(object);
      const parsed = JSON.parse(text) as Record<string, unknown>;
      for (let i = 0; i < text.length; i++) digest = Math.imul(digest ^ text.charCodeAt(i), 0x01000193) >>> 0;
      digest = (digest ^ (parsed['score'] as number)) >>> 0;
    }
  }
  return digest;
}

const median = (values: number[]): number =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

/** Times `rounds` rounds of the workload (after one untimed round that compiles it). */
export function calibrate(rounds = 5, size: CalibrationSize = WORKLOAD): Calibration {
  calibrationRound(size);
  const roundsMs: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const started = performance.now();
    calibrationRound(size);
    roundsMs.push(Math.round((performance.now() - started) * 10) / 10);
  }
  return { medianMs: median(roundsMs), roundsMs };
}

/**
 * How fast the machine's memory answers now: the JSON workload above stays within the caches, and on the
 * build VM the pipeline has run at half its best rate on a day that workload was at its fastest. The
 * pipeline's heaps are hundreds of MB, and every stage keeps taking fresh pages (see FINDINGS.md), so two
 * more measures, both in the bench's own process:
 * - a dependent read: each read's address is the last one's value, over 128 MB in an order the
 *   prefetchers cannot follow, so each waits for memory and, mostly, for the address translation;
 * - the first touch of a fresh 4 KB page (anonymous memory just mapped: the kernel's page fault).
 */
export interface MemorySpeed {
  /** Median ns per dependent read. */
  readNs: number;
  /** Median µs per first touch of a fresh page. */
  freshPageUs: number;
}

export const MEMORY_WORKLOAD =
  'a dependent read over 128 MB, in an order no prefetcher follows; the first write to each 4 KB page of 64 MB just mapped';

/** The probes' sizes: the bench always runs the default; a smaller one only checks the code. */
export interface MemoryProbeSize {
  /** The dependent reads' array, MB (a power of two). */
  readMb: number;
  reads: number;
  /** The fresh memory of each round, MB. */
  freshMb: number;
}

const MEMORY_PROBE: MemoryProbeSize = { readMb: 128, reads: 500_000, freshMb: 64 };

/** Ints per 64-byte cache line: each read lands on a line of its own. */
const LINE_INTS = 16;
const PAGE_BYTES = 4096;

/**
 * A cycle through every cache line of `mb` MB: line i holds the index of the next, in the order of a
 * full-period linear congruential generator over the lines (Hull–Dobell: an odd increment, a multiplier
 * of 1 mod 4, a power-of-two count). Consecutive lines are far apart and at no fixed stride.
 */
export function readChain(mb: number): Int32Array {
  const lines = (mb * 1024 * 1024) / 4 / LINE_INTS;
  if (!Number.isInteger(lines) || (lines & (lines - 1)) !== 0)
    throw new Error(`${mb} MB is not a power of two`);
  const chain = new Int32Array(lines * LINE_INTS);
  const mask = lines - 1;
  for (let line = 0; line < lines; line++) {
    chain[line * LINE_INTS] = ((Math.imul(line, 1_664_525) + 1_013_904_223) & mask) * LINE_INTS;
  }
  return chain;
}

/** Follows the chain `reads` times from its start; answers where it ended (so the reads are not elided). */
export function followChain(chain: Int32Array, reads: number): number {
  let at = 0;
  for (let read = 0; read < reads; read++) at = chain[at] as number;
  return at;
}

/** Times the first write to each page of `mb` MB of memory just mapped: µs per page. */
export function touchFreshPages(mb: number): number {
  // Uninitialised, and far above glibc's largest mmap threshold (32 MB): the kernel maps fresh pages.
  const memory = Buffer.allocUnsafeSlow(mb * 1024 * 1024);
  const started = performance.now();
  for (let at = 0; at < memory.length; at += PAGE_BYTES) memory[at] = 1;
  return ((performance.now() - started) * 1000) / (memory.length / PAGE_BYTES);
}

/** Times `rounds` rounds of each memory probe (the chain is built and read once untimed first). */
export function probeMemory(rounds = 3, size: MemoryProbeSize = MEMORY_PROBE): MemorySpeed {
  const chain = readChain(size.readMb);
  followChain(chain, size.reads);
  const readNs: number[] = [];
  const freshPageUs: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const started = performance.now();
    followChain(chain, size.reads);
    readNs.push(((performance.now() - started) * 1e6) / size.reads);
    freshPageUs.push(touchFreshPages(size.freshMb));
  }
  return {
    readNs: Math.round(median(readNs)),
    freshPageUs: Math.round(median(freshPageUs) * 10) / 10,
  };
}

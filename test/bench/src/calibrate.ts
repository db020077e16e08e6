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

/** Times `rounds` rounds of the workload (after one untimed round that compiles it). */
export function calibrate(rounds = 5, size: CalibrationSize = WORKLOAD): Calibration {
  calibrationRound(size);
  const roundsMs: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const started = performance.now();
    calibrationRound(size);
    roundsMs.push(Math.round((performance.now() - started) * 10) / 10);
  }
  const sorted = [...roundsMs].sort((a, b) => a - b);
  return { medianMs: sorted[Math.floor(sorted.length / 2)] as number, roundsMs };
}

import {
  calibrate,
  calibrationRound,
  followChain,
  probeMemory,
  readChain,
  touchFreshPages,
} from '../src/calibrate';
import { calibrationLine, memoryLine } from '../src/report';

// A small workload: the code is what is checked here, not the machine.
const small = { objects: 50, passes: 2 };

describe('calibrate', () => {
  it('calibrationRound should do the same work every time (the same digest), and more work another one', () => {
    const digest = calibrationRound(small);
    expect(digest).toBeGreaterThan(0);
    expect(calibrationRound(small)).toBe(digest);
    expect(calibrationRound({ ...small, objects: 51 })).not.toBe(digest);
  });

  it('calibrate should time each round and answer their median', () => {
    const calibration = calibrate(3, small);
    expect(calibration.roundsMs).toHaveLength(3);
    for (const ms of calibration.roundsMs) expect(ms).toBeGreaterThan(0);
    expect(calibration.medianMs).toBe([...calibration.roundsMs].sort((a, b) => a - b)[1]);
  });
});

describe('calibrationLine', () => {
  it('calibrationLine should give the range over the run and the timing before each scenario', () => {
    const line = calibrationLine({
      workload: 'w',
      beforeScenarioMs: { 'fleet-1000': 200, 'internal-1': 300 },
      endMs: 250,
    });
    expect(line).toContain('(w;');
    expect(line).toContain(
      '200–300 ms (slowest ÷ fastest 1.5); 200 ms before fleet-1000, 300 ms before internal-1, 250 ms at the end.',
    );
  });

  it('calibrationLine should say when nothing was measured', () => {
    const line = calibrationLine({ workload: 'w', beforeScenarioMs: {}, endMs: null });
    expect(line).toContain('lower is faster): not measured.');
    expect(line).not.toContain('÷');
  });
});

describe('probeMemory', () => {
  it('readChain should link every cache line of its memory into one cycle', () => {
    const chain = readChain(1);
    const lines = chain.length / 16;
    const seen = new Set<number>();
    let at = 0;
    for (let read = 0; read < lines; read++) {
      seen.add(at);
      at = chain[at] as number;
    }
    // Each read lands at the start of a line (16 ints), and every line is read once before the chain closes.
    expect([...seen].filter((offset) => offset % 16 !== 0)).toEqual([]);
    expect(seen.size).toBe(lines);
    expect(at).toBe(0);
    expect(followChain(chain, lines)).toBe(0);
    expect(followChain(chain, 1)).toBe(chain[0]);
  });

  it('readChain should refuse a size that is not a power of two', () => {
    expect(() => readChain(3)).toThrow('3 MB is not a power of two');
  });

  it('touchFreshPages and probeMemory should answer a positive time per page and per read', () => {
    expect(touchFreshPages(1)).toBeGreaterThan(0);
    // Fresh pages only above glibc's largest mmap threshold (32 MB, see touchFreshPages): a 1 MB buffer may
    // come from pages the heap already touched, a time per page that rounds to 0.0 µs.
    const speed = probeMemory(3, { readMb: 1, reads: 10_000, freshMb: 64 });
    expect(speed.readNs).toBeGreaterThan(0);
    expect(speed.freshPageUs).toBeGreaterThan(0);
  });
});

describe('memoryLine', () => {
  it('memoryLine should give the range of each probe and the probes before each scenario', () => {
    const line = memoryLine({
      workload: 'm',
      beforeScenario: {
        'fleet-1000': { readNs: 120, freshPageUs: 2.5 },
        'internal-1': { readNs: 280, freshPageUs: 10.1 },
      },
      end: { readNs: 150, freshPageUs: 3 },
    });
    expect(line).toContain('(m;');
    expect(line).toContain(
      'a dependent read 120–280 ns, a fresh page 2.5–10.1 µs; 120 ns · 2.5 µs before fleet-1000, 280 ns · 10.1 µs before internal-1, 150 ns · 3 µs at the end.',
    );
  });

  it('memoryLine should say when nothing was measured', () => {
    expect(memoryLine({ workload: 'm', beforeScenario: {}, end: null })).toContain(
      'lower is faster): not measured.',
    );
  });
});

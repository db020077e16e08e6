import { calibrate, calibrationRound } from '../src/calibrate';
import { calibrationLine } from '../src/report';

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

import { usageAfterIdle, type ProcessUsage } from '../src/procstat';
import { warmUp } from '../src/scenario';
import { completeness, cycleFault, unfetchedOf } from '../src/scenario-records';

describe('warmUp', () => {
  it('warmUp should settle only once the services are idle after the warm-up cycle', async () => {
    const steps: string[] = [];
    let becomeIdle: (ms: number) => void = () => undefined;
    const settled = warmUp(
      {
        cycle: async () => {
          steps.push('cycle');
        },
        idle: (timeoutMs) => {
          steps.push(`idle ${timeoutMs}`);
          return new Promise<number | undefined>((resolve) => (becomeIdle = resolve));
        },
        log: (line) => steps.push(line),
      },
      120_000,
    ).then(() => steps.push('settled'));
    await new Promise((resolve) => setImmediate(resolve));
    expect(steps).toEqual(['cycle', 'idle 120000']);
    becomeIdle(1_500);
    await settled;
    expect(steps).toEqual([
      'cycle',
      'idle 120000',
      '  services idle 1.5 s after the warm-up summary',
      'settled',
    ]);
  });

  it('warmUp should go on, and say so, when the services are still busy at the timeout', async () => {
    const lines: string[] = [];
    await warmUp(
      { cycle: async () => undefined, idle: async () => undefined, log: (line) => lines.push(line) },
      120_000,
    );
    expect(lines).toEqual(['  services still busy 120 s after the warm-up summary; measured anyway']);
  });
});

describe('usageAfterIdle', () => {
  const read = (pid: number): ProcessUsage | null =>
    pid === 2 ? null : { peakRssMb: 100, rssMb: 90, cpuSec: 1, systemCpuSec: 0.1, minorFaults: 5 };

  it('usageAfterIdle should keep a process whose usage could not be read, as NaN', () => {
    const children = new Map([
      ['scorer', { pid: 1 }],
      ['publisher', { pid: 2 }],
    ]);
    const usage = usageAfterIdle({ children, crashed: () => undefined }, read);
    expect(usage['scorer']?.peakRssMb).toBe(100);
    expect(usage['publisher']?.peakRssMb).toBeNaN();
    expect(usage['publisher']?.cpuSec).toBeNaN();
  });

  it('usageAfterIdle should fail when a service exited before its usage was read', () => {
    const children = new Map([['scorer', { pid: 1 }]]);
    expect(() =>
      usageAfterIdle({ children, crashed: () => 'scorer exited; last lines: boom' }, read),
    ).toThrow(/scorer exited; last lines: boom/);
  });
});

describe('cycle soundness', () => {
  const summary = (status: 'complete' | 'partial', total: number, incomplete: number, failed: number) =>
    ({ status, devices: { total, scored: total - failed, incomplete, failed } }) as never;

  it('unfetchedOf should count the devices scored without their vulnerabilities because the fetch failed', () => {
    expect(
      unfetchedOf([
        { missingReasons: { criticalCves: 'FETCH_FAILED' } },
        { missingReasons: { criticalCves: 'EXCLUDED', exposureLevel: 'NOT_REPORTED' } },
        {},
        { missingReasons: { criticalCves: 'FETCH_FAILED', exposureLevel: 'NOT_REPORTED' } },
      ]),
    ).toBe(2);
  });

  it('completeness should carry the status, incomplete and failed devices of the summary and the unfetched ones', () => {
    expect(completeness({ summary: summary('partial', 10, 4, 2), unfetchedDevices: 3 })).toEqual({
      status: 'partial',
      incomplete: 4,
      failed: 2,
      unfetched: 3,
    });
  });

  it('cycleFault should pass a complete cycle whose only incomplete devices lack a signal of the device list', () => {
    expect(cycleFault({ status: 'complete', incomplete: 40, failed: 0, unfetched: 0 })).toBeNull();
  });

  it('cycleFault should name a partial cycle, failed devices and devices without their vulnerabilities', () => {
    expect(cycleFault({ status: 'partial', incomplete: 0, failed: 0, unfetched: 0 })).toMatch(/partial/);
    expect(cycleFault({ status: 'complete', incomplete: 0, failed: 7, unfetched: 0 })).toMatch(
      /7 devices failed/,
    );
    expect(cycleFault({ status: 'complete', incomplete: 10, failed: 0, unfetched: 10 })).toMatch(
      /10 devices scored without their vulnerabilities/,
    );
  });
});

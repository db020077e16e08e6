import { warmUp } from '../src/scenario';

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

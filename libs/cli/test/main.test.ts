import { spawnSync } from 'node:child_process';
import path from 'node:path';

// The `urs` entry as an operator runs it (compiled by the build, as `npx urs` runs it).
const bin = path.join(__dirname, '..', 'bin', 'urs.js');
const urs = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

describe('urs', () => {
  it('should print its usage to stdout and exit 0 when asked for help', () => {
    const result = urs('--help');
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/^usage: urs <command>/);
    expect(result.stderr).toBe('');
  });

  it('should exit 2, bad usage, with its usage on stderr when given no command or an unknown one', () => {
    for (const args of [[], ['frobnicate']]) {
      const result = urs(...args);
      expect(result.status).toBe(2);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(/usage: urs <command>/);
    }
  });

  it('should not echo an unknown command, as a secret pasted in its place would be', () => {
    const secret = 'S3cr3tV4lue-of-a-client';
    const result = urs(secret, '--help');
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(
      /^urs: unknown command \(argument 1, not shown\): it must be score or defender/,
    );
    expect(result.stderr).not.toContain(secret);
  });
});

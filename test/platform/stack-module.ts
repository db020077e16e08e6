import { execFile, execFileSync } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * Evaluates `expression` in a Node of its own with `m` bound to the exports of `deploy/stack/<file>` (the
 * stack's scripts are ES modules, the tests are not), and answers the expression's value, a string.
 */
export function fromStackModule(file: string, expression: string): string {
  return execFileSync(process.execPath, evaluating(file, expression), { encoding: 'utf8' });
}

/**
 * fromStackModule without blocking this process meanwhile: the children it spawned are reaped as they exit,
 * so a script waiting for one of them to end sees it gone.
 */
export async function fromStackModuleAsync(file: string, expression: string): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, evaluating(file, expression), {
    encoding: 'utf8',
  });
  return stdout;
}

/** Node's arguments that print `expression` with `m` bound to the exports of `deploy/stack/<file>`. */
function evaluating(file: string, expression: string): string[] {
  const script = path.join(__dirname, '..', '..', 'deploy', 'stack', file);
  return [
    '--input-type=module',
    '-e',
    `const m = await import(${JSON.stringify(script)}); process.stdout.write(String(${expression}));`,
  ];
}

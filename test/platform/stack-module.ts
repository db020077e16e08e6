import { execFileSync } from 'node:child_process';
import path from 'node:path';

/**
 * Evaluates `expression` in a Node of its own with `m` bound to the exports of `deploy/stack/<file>` (the
 * stack's scripts are ES modules, the tests are not), and answers the expression's value, a string.
 */
export function fromStackModule(file: string, expression: string): string {
  const script = path.join(__dirname, '..', '..', 'deploy', 'stack', file);
  return execFileSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const m = await import(${JSON.stringify(script)}); process.stdout.write(String(${expression}));`,
    ],
    { encoding: 'utf8' },
  );
}

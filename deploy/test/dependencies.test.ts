// The image keeps only production dependencies (`npm prune --omit=dev` in the Dockerfile), so a package
// that a workspace loads at run time but that only the root's devDependencies install is missing there:
// the process dies with `Cannot find module` (the simulator did, with node-forge, and compose started
// nothing). Each workspace's runtime files are compiled the way tsc compiles them (imports used only as
// types are dropped) and every package they load must be a Node builtin, a workspace, or one of that
// workspace's own `dependencies`.
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import ts from 'typescript';

const root = path.resolve(__dirname, '..', '..');

interface PackageJson {
  name: string;
  workspaces?: string[];
  dependencies?: Record<string, string>;
}

const readPackage = (dir: string): PackageJson =>
  JSON.parse(fs.readFileSync(path.join(root, dir, 'package.json'), 'utf8')) as PackageJson;

function workspaceDirs(): string[] {
  return (readPackage('.').workspaces ?? []).flatMap((pattern) => {
    if (!pattern.endsWith('/*')) return [pattern];
    const parent = pattern.slice(0, -2);
    return fs
      .readdirSync(path.join(root, parent), { withFileTypes: true })
      .filter(
        (entry) => entry.isDirectory() && fs.existsSync(path.join(root, parent, entry.name, 'package.json')),
      )
      .map((entry) => `${parent}/${entry.name}`);
  });
}

/** The TypeScript files a workspace compiles into what it runs: src/, without tests. */
function runtimeFiles(dir: string): string[] {
  const src = path.join(root, dir, 'src');
  if (!fs.existsSync(src)) return [];
  return (fs.readdirSync(src, { recursive: true }) as string[])
    .filter((file) => /\.ts$/.test(file) && !/\.(test|d)\.ts$/.test(file))
    .map((file) => path.join(src, file));
}

/** `node-forge` of `node-forge/lib/pki`, `@azure/identity` of `@azure/identity/x`. */
function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return (specifier.startsWith('@') ? parts.slice(0, 2) : parts.slice(0, 1)).join('/');
}

/** The packages a TypeScript file loads once compiled: its requires and dynamic imports of a literal name. */
function loadedPackages(source: string): string[] {
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: {
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2022,
      esModuleInterop: true,
    },
  });
  const specifiers = [...outputText.matchAll(/\b(?:require|import)\(\s*["']([^"']+)["']\s*\)/g)].map(
    (match) => match[1] ?? '',
  );
  return [...new Set(specifiers.filter((s) => !s.startsWith('.') && !s.startsWith('/')).map(packageOf))];
}

const isBuiltin = (name: string): boolean => name.startsWith('node:') || builtinModules.includes(name);

describe('workspace dependencies', () => {
  const workspaces = workspaceDirs();

  test('loadedPackages should keep runtime imports and drop type-only ones', () => {
    const source = [
      "import forge from 'node-forge';",
      "import type { Redis } from 'ioredis';",
      "import { type Consumer } from 'kafkajs';",
      "import { readFileSync } from 'node:fs';",
      "import { local } from './local';",
      "const pki = require('node-forge/lib/pki');",
      'export const use = (r: Redis, c: Consumer) => [forge, pki, readFileSync, local, r, c];',
    ].join('\n');
    expect(loadedPackages(source).sort()).toEqual(['node-forge', 'node:fs'].sort());
  });

  test('workspaces should include the simulator and every stage', () => {
    expect(workspaces).toEqual(
      expect.arrayContaining(['test/simulator', 'services/scorer', 'services/poller', 'libs/bus']),
    );
  });

  test.each(workspaceDirs())(
    '%s should list every package its runtime files load in its dependencies',
    (dir) => {
      const declared = new Set(Object.keys(readPackage(dir).dependencies ?? {}));
      const missing = new Set<string>();
      for (const file of runtimeFiles(dir)) {
        for (const name of loadedPackages(fs.readFileSync(file, 'utf8'))) {
          // A workspace is installed anyway, but one that loads another must still name it (tsc -b order).
          if (isBuiltin(name) || declared.has(name)) continue;
          missing.add(`${name} (${path.relative(root, file)})`);
        }
      }
      expect([...missing]).toEqual([]);
    },
  );
});

// What the deploy tests read from the repository: its files, the sources a compiled script comes from, and the
// TypeScript sources of the libraries and services (not their tests).
import fs from 'node:fs';
import path from 'node:path';

export const root = path.resolve(__dirname, '..', '..');

export const read = (file: string): string => fs.readFileSync(path.join(root, file), 'utf8');

/**
 * The kube-state-metrics series deploy/prometheus/alerts.yml reads (README, Alerts, says which rules need it),
 * each with the labels kube-state-metrics gives it besides those of its scrape: how many replicas each
 * Deployment asks for.
 */
export const kubeStateMetrics: Record<string, string[]> = { kube_deployment_spec_replicas: ['deployment'] };

/** The five pipeline stages, each a directory of services/. */
export const stages = ['registrar', 'poller', 'vuln-fetcher', 'scorer', 'publisher'];

/** `X/dist/Y.js` comes from `X/src/Y.ts` when X's tsconfig compiles src into dist. */
export function sourceOf(script: string): string {
  const match = /^(.+)\/dist\/(.+)\.js$/.exec(script);
  if (!match) throw new Error(`${script} is not a compiled dist/*.js entry`);
  const [, pkg, file] = match as unknown as [string, string, string];
  const tsconfig = read(`${pkg}/tsconfig.json`);
  expect(tsconfig).toMatch(/"rootDir":\s*"src"/);
  expect(tsconfig).toMatch(/"outDir":\s*"dist"/);
  return `${pkg}/src/${file}.ts`;
}

/** The text of every TypeScript file under each package's src/ (`libs/config`, or `libs` for all of them). */
export function sourcesOf(...dirs: string[]): string[] {
  const files: string[] = [];
  const walk = (dir: string): void => {
    if (!fs.existsSync(dir)) return;
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.ts')) files.push(fs.readFileSync(full, 'utf8'));
    }
  };
  for (const dir of dirs) {
    const packages = fs.existsSync(path.join(root, dir, 'src'))
      ? [dir]
      : fs.readdirSync(path.join(root, dir)).map((pkg) => `${dir}/${pkg}`);
    for (const pkg of packages) walk(path.join(root, pkg, 'src'));
  }
  return files;
}

/** The metric names the code registers (`registry.counter('urs_…'`, gauges, histograms). */
export function registeredMetrics(): Set<string> {
  const code = sourcesOf('libs', 'services').join('\n');
  return new Set(
    [...code.matchAll(/\.(?:counter|gauge|histogram)\(\s*'([a-z_]+)'/g)].map((match) => match[1] as string),
  );
}

// README's "Metrics" table is what an SRE reads to find a metric: checked here against the metrics the code
// registers, so a metric added, renamed or dropped cannot leave the table wrong.
import { read, registeredMetrics } from './repo';

/** The metric names in the first column of README's "Metrics" table. */
function documentedMetrics(): { table: string; names: Set<string> } {
  const readme = read('README.md');
  const start = readme.indexOf('\n### Metrics\n');
  expect(start).toBeGreaterThan(0);
  const section = readme.slice(start + 1, readme.indexOf('\n## ', start + 1));
  const rows = section.split('\n').filter((line) => line.startsWith('| `'));
  const names = rows.flatMap((row) =>
    [...(row.split('|')[1] ?? '').matchAll(/`([a-z_]+)`/g)].map((match) => match[1] as string),
  );
  return { table: section, names: new Set(names) };
}

describe("README's Metrics table", () => {
  const registered = registeredMetrics();
  const { table, names } = documentedMetrics();

  test('every metric the code registers should be in the table', () => {
    expect(registered.size).toBeGreaterThan(20);
    const missing = [...registered].filter((name) => !names.has(name) && !table.includes(`\`${name}\``));
    expect(missing).toEqual([]);
  });

  test('every metric the table names should be registered by the code', () => {
    expect(names.size).toBeGreaterThan(20);
    expect([...names].filter((name) => !registered.has(name))).toEqual([]);
  });
});

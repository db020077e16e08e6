// deploy/prometheus/alerts.yml names metrics and label values the services serve: checked here against the
// code, so a metric renamed or a label value changed cannot leave an alert that never fires.
import { parse } from 'yaml';
import { read, registeredMetrics, sourcesOf, stages } from './repo';

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const rules = (
  parse(read('deploy/prometheus/alerts.yml')) as {
    groups: { name: string; rules: Rule[] }[];
  }
).groups.flatMap((group) => group.rules);

const code = sourcesOf('libs', 'services').join('\n');
const registered = registeredMetrics();

/** The metrics an expression reads, a histogram's series by the histogram's name. */
function metricsOf(expr: string): string[] {
  return [...expr.matchAll(/\b((?:urs|process|nodejs)_[a-z_]+)\b/g)].map((match) =>
    (match[1] as string).replace(/_(bucket|sum|count)$/, ''),
  );
}

/** The label values an expression matches on (`label="value"`, each alternative of `label=~"a|b"`). */
function labelValuesOf(expr: string): { label: string; value: string }[] {
  return [...expr.matchAll(/(\w+)(=~|=)"([^"]*)"/g)].flatMap((match) =>
    (match[2] === '=~' ? (match[3] as string).split('|') : [match[3] as string]).map((value) => ({
      label: match[1] as string,
      value,
    })),
  );
}

/** The label names of a `by (…)` or `on (…)` list. */
function labelsOf(list: string | undefined): string[] {
  return (list ?? '')
    .split(',')
    .map((label) => label.trim())
    .filter(Boolean);
}

/** An expression's aggregations (`sum by (job) (…)`, `min(…)`) and the labels each keeps, if it names them. */
function aggregationsOf(expr: string): { operator: string; by: string[] | undefined }[] {
  return [
    ...expr.matchAll(/\b(sum|min|max|avg|count|group|topk|bottomk|quantile)\s*(?:by\s*\(([^)]*)\)\s*)?\(/g),
  ].map((match) => ({ operator: match[0], by: match[2] === undefined ? undefined : labelsOf(match[2]) }));
}

describe('deploy/prometheus/alerts.yml', () => {
  test('the code should register metrics, or the rules have nothing to check', () => {
    expect(registered).toContain('urs_ready');
    expect(registered).toContain('urs_messages_total');
    expect(registered.size).toBeGreaterThan(20);
  });

  test('every rule should have a unique name, a severity, a summary and a description', () => {
    expect(rules.length).toBeGreaterThan(0);
    expect(new Set(rules.map((rule) => rule.alert)).size).toBe(rules.length);
    for (const rule of rules) {
      expect([rule.alert, ['page', 'ticket'].includes(rule.labels?.['severity'] ?? '')]).toEqual([
        rule.alert,
        true,
      ]);
      expect([rule.alert, Boolean(rule.annotations?.['summary'] && rule.annotations['description'])]).toEqual(
        [rule.alert, true],
      );
    }
  });

  test('a scrape target of the stages that stopped answering should alert, only in the jobs that scrape them', () => {
    const down = rules.filter((rule) => /^up == 0\b/.test(rule.expr));
    expect(down.map((rule) => rule.alert)).toEqual(['UrsTargetDown']);
    // `up` is every target's: the rule keeps the jobs whose targets served the stages' own urs_ready.
    expect(down[0]?.expr).toMatch(/ and on \([^)]*\) .*\burs_ready\b/);
    // A stage of one install (its namespace): a Prometheus that scrapes two installs with the same job
    // names alerts for each on its own. Not per replica (pod, instance): a replaced pod's target is new.
    const expr = down[0]?.expr ?? '';
    const joined = labelsOf(/ and on \(([^)]*)\)/.exec(expr)?.[1]);
    expect(joined).toEqual(['job', 'namespace']);
    expect(aggregationsOf(expr).map((aggregation) => aggregation.by)).toEqual([joined]);
  });

  test.each(rules.map((rule) => [rule.alert, rule] as const))(
    'rule %s should keep each install apart: every aggregation and join keeps namespace',
    (_name, rule) => {
      for (const { operator, by } of aggregationsOf(rule.expr))
        expect([operator, by?.includes('namespace')]).toEqual([operator, true]);
      for (const match of rule.expr.matchAll(/\b(on|ignoring) \(([^)]*)\)/g))
        expect([match[0], match[1] === 'ignoring' || labelsOf(match[2]).includes('namespace')]).toEqual([
          match[0],
          true,
        ]);
    },
  );

  test.each(rules.map((rule) => [rule.alert, rule] as const))(
    'rule %s should read only metrics the services register',
    (_name, rule) => {
      const metrics = metricsOf(rule.expr);
      expect(metrics.length).toBeGreaterThan(0);
      for (const metric of metrics) expect([metric, registered.has(metric)]).toEqual([metric, true]);
    },
  );

  test.each(rules.map((rule) => [rule.alert, rule] as const))(
    'rule %s should match only label values the code writes',
    (_name, rule) => {
      for (const { label, value } of labelValuesOf(rule.expr)) {
        // An HTTP status is written as the number it is (urs_defender_calls_total's status).
        const written = /^\d{3}$/.test(value) || code.includes(`'${value}'`);
        expect([label, value, written]).toEqual([label, value, true]);
      }
    },
  );

  test.each(rules.map((rule) => [rule.alert, rule] as const))(
    'rule %s should quote log texts with a value ("reason: <value>") as the code writes them',
    (_name, rule) => {
      const quoted = [...(rule.annotations?.['description'] ?? '').matchAll(/"([^"<]+): <[^>"]+>"/g)];
      for (const [, text] of quoted) expect([text, code.includes(`${text}: `)]).toEqual([text, true]);
    },
  );

  test("README's Alerts table should have a runbook row for every rule, and none for a rule there is not", () => {
    const readme = read('README.md');
    const start = readme.indexOf('\n### Alerts\n');
    expect(start).toBeGreaterThan(0);
    const section = readme.slice(start + 1, readme.indexOf('\n### ', start + 1));
    const rows = section.split('\n').filter((line) => line.startsWith('| `'));
    const documented = rows.map((row) => /^\| `(\w+)`/.exec(row)?.[1] ?? row);
    expect([...documented].sort()).toEqual(rules.map((rule) => rule.alert).sort());
    // Each row: the alert, its severity as the rule sets it, what it means and what to do.
    for (const rule of rules) {
      const cells = rows[documented.indexOf(rule.alert)]?.split('|').map((cell) => cell.trim()) ?? [];
      expect([rule.alert, cells[2], cells.slice(3, 5).every(Boolean)]).toEqual([
        rule.alert,
        rule.labels?.['severity'],
        true,
      ]);
    }
  });

  test("UrsMessagesHeld's description and runbook row should name the hold on tenant records not rebuilt", () => {
    const held = rules.find((rule) => rule.alert === 'UrsMessagesHeld');
    expect(held?.annotations?.['description']).toMatch(/registrar has not rebuilt.*TENANTS_NOT_REBUILT/s);
    const row = read('README.md')
      .split('\n')
      .find((line) => line.startsWith('| `UrsMessagesHeld`'));
    expect(row).toMatch(/TENANTS_NOT_REBUILT/);
  });

  test('the memory rules should cover each stage once, firing above its heap cap and below its limit in deploy/k8s', () => {
    const memoryRules = rules.filter((rule) => rule.expr.includes('process_resident_memory_bytes'));
    expect(memoryRules.length).toBeGreaterThan(0);
    const units: Record<string, number> = { Mi: 2 ** 20, Gi: 2 ** 30 };
    const nodeFlags = JSON.parse(read('deploy/node-flags.json')) as Record<string, string[]>;
    for (const stage of stages) {
      // The rules whose job matcher (`job="x"`, `job!="x"`, or none) takes the stage's processes.
      const covering = memoryRules.filter((rule) => {
        const job = /process_resident_memory_bytes(?:\{job(!?=)"([^"]*)"\})?/.exec(rule.expr);
        if (job?.[1] === undefined) return true;
        return job[1] === '=' ? job[2] === stage : job[2] !== stage;
      });
      expect([stage, covering.length]).toEqual([stage, 1]);
      const threshold = Number(
        /process_resident_memory_bytes\S* > ([\d.e]+)/.exec(covering[0]?.expr ?? '')?.[1],
      );
      expect([stage, threshold > 0]).toEqual([stage, true]);
      const limit = /limits:\s*\n(?:\s+\w+: .*\n)*?\s+memory: (\d+)(Mi|Gi)/.exec(
        read(`deploy/k8s/${stage}.yaml`),
      );
      const bytes = Number(limit?.[1]) * (units[limit?.[2] ?? ''] ?? NaN);
      // Below the limit, where the OOM killer would act before it fired.
      expect([stage, threshold < bytes]).toEqual([stage, true]);
      // Above a heap cap, which the stage may fill by design.
      const cap = (nodeFlags[stage] ?? [])
        .map((flag) => /^--max-old-space-size=(\d+)$/.exec(flag)?.[1])
        .find(Boolean);
      if (cap !== undefined) expect([stage, threshold > Number(cap) * 2 ** 20]).toEqual([stage, true]);
    }
  });
});

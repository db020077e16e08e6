// deploy/prometheus/alerts.yml names metrics and label values the services serve: checked here against the
// code, so a metric renamed or a label value changed cannot leave an alert that never fires.
import { parse, parseAllDocuments } from 'yaml';
import { kubeStateMetrics, read, registeredMetrics, sourcesOf, stages } from './repo';

interface PodMetadata {
  labels?: Record<string, string>;
}

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

/** The app.kubernetes.io/part-of label of each stage's pods in deploy/k8s. */
const partOfs = stages.map((stage) => {
  const deployment = parseAllDocuments(read(`deploy/k8s/${stage}.yaml`))
    .map((document) => document.toJS() as { kind?: string; spec?: { template?: { metadata?: PodMetadata } } })
    .find((manifest) => manifest.kind === 'Deployment');
  return deployment?.spec?.template?.metadata?.labels?.['app.kubernetes.io/part-of'];
});
const partOf = partOfs[0] ?? '';

/** The target label deploy/prometheus/scrape.yml copies a discovered label into, if it does. */
function scrapeCopies(source: string): string | undefined {
  const scrape = parse(read('deploy/prometheus/scrape.yml')) as {
    scrape_configs: {
      relabel_configs: { source_labels?: string[]; target_label?: string; action?: string }[];
    }[];
  };
  return scrape.scrape_configs[0]?.relabel_configs.find(
    (config) =>
      (config.action ?? 'replace') === 'replace' &&
      config.source_labels?.length === 1 &&
      config.source_labels[0] === source,
  )?.target_label;
}

/** The metrics an expression reads, a histogram's series by the histogram's name. */
function metricsOf(expr: string): string[] {
  return [...expr.matchAll(/\b((?:urs|process|nodejs|kube)_[a-z_]+)\b/g)].map((match) =>
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

/**
 * The codes of the errors the code makes infrastructure faults: made with `infrastructure: true`, or of a class
 * that makes every error of its one (StoreError). A message whose handler fails with one is held by the
 * consumer runner (handlerFailureOf: `dependency`), never dead-lettered for it, and the log line `messages
 * held` names its code: `UrsMessagesHeld`'s runbook says what each means.
 */
function holdCodes(): Set<string> {
  const constants = new Map(
    [...code.matchAll(/\bconst ([A-Z][A-Z0-9_]+) = '([A-Z][A-Z0-9_]+)'/g)].map(
      (match) => [match[1] as string, match[2] as string] as const,
    ),
  );
  const alwaysHeld = [
    ...code.matchAll(
      /\bclass (\w+) extends \w+ \{\s*constructor\(code: string(?:(?!\bclass )[^])*?super\(code,[^;]*?infrastructure: true/g,
    ),
  ].map((match) => match[1] as string);
  const made = [
    ...code.matchAll(/\b(?:new \w+|super)\(\s*'?([A-Z][A-Z0-9_]+)'?,[^;]*?infrastructure: true/g),
    ...alwaysHeld.flatMap((name) => [
      ...code.matchAll(new RegExp(`\\bnew ${name}\\(\\s*'?([A-Z][A-Z0-9_]+)'?,`, 'g')),
    ]),
  ].map((match) => match[1] as string);
  return new Set(made.map((name) => constants.get(name) ?? name));
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

  test("a scrape target of the stages that stopped answering should alert, by the label scrape.yml copies from the pods' part-of", () => {
    // One value for the five stages' pods, which the scrape job keeps.
    expect(partOfs).toEqual(stages.map(() => 'defender-urs'));
    const down = rules.filter((rule) => /^up\b.* == 0$/.test(rule.expr));
    expect(down.map((rule) => rule.alert)).toEqual(['UrsTargetDown']);
    // Every target of the stages' job and no other job's, with no condition on what a target served before: a
    // stage that never started, or has been down for days, alerts all the same.
    expect(down[0]?.expr).toBe(`up{part_of="${partOf}"} == 0`);
    expect(scrapeCopies('__meta_kubernetes_pod_label_app_kubernetes_io_part_of')).toBe('part_of');
  });

  test('a stage without a ready replica should alert, for each of the stages deploy/k8s runs', () => {
    const rule = rules.find((candidate) => candidate.alert === 'UrsStageNoReadyReplica');
    const named = [...(rule?.expr ?? '').matchAll(/"job", "([a-z-]+)"/g)].map((match) => match[1]);
    expect(named).toEqual(stages);
    expect(rule?.expr).toContain(`up{part_of="${partOf}"}`);
    expect(rule?.expr).toMatch(
      /unless on \(namespace, job\) group by \(namespace, job\) \(urs_ready == 1\)$/,
    );
    // A stage whose Deployment, named as the stage, asks for no replica is left out.
    expect(rule?.expr).toContain(
      'unless on (namespace, job) (max by (namespace, job) (label_replace(kube_deployment_spec_replicas, "job", "$1", "deployment", "(.+)")) == 0)',
    );
    for (const stage of stages) {
      const deployment = parseAllDocuments(read(`deploy/k8s/${stage}.yaml`))
        .map((document) => document.toJS() as { kind?: string; metadata?: { name?: string } })
        .find((manifest) => manifest.kind === 'Deployment');
      expect(deployment?.metadata?.name).toBe(stage);
    }
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
      // Prometheus' own `up` of a target is the one metric a rule may read besides the stages' and the few of
      // kube-state-metrics' that README's Alerts names.
      expect([
        rule.alert,
        metrics.some((metric) => registered.has(metric)) || /^up\{/.test(rule.expr),
      ]).toEqual([rule.alert, true]);
      for (const metric of metrics)
        expect([metric, registered.has(metric) || metric in kubeStateMetrics]).toEqual([metric, true]);
    },
  );

  test("README's Alerts should name each kube-state-metrics series the rules read, and the rules that need it", () => {
    const readme = read('README.md');
    const start = readme.indexOf('\n### Alerts\n');
    const section = readme.slice(start + 1, readme.indexOf('\n### ', start + 1));
    const reading = rules.filter((rule) =>
      Object.keys(kubeStateMetrics).some((name) => rule.expr.includes(name)),
    );
    expect(reading.map((rule) => rule.alert).sort()).toEqual([
      'UrsStageNoReadyReplica',
      'UrsStageUnderReplicated',
    ]);
    for (const name of Object.keys(kubeStateMetrics))
      expect([name, section.includes(`\`${name}\``)]).toEqual([name, true]);
    for (const rule of reading)
      expect([
        rule.alert,
        section.includes(`**kube-state-metrics.**`) && section.includes(`\`${rule.alert}\``),
      ]).toEqual([rule.alert, true]);
  });

  test.each(rules.map((rule) => [rule.alert, rule] as const))(
    'rule %s should match only label values the code writes',
    (_name, rule) => {
      for (const { label, value } of labelValuesOf(rule.expr)) {
        // An HTTP status is written as the number it is (urs_defender_calls_total's status); `part_of` is the
        // pods' label in deploy/k8s, copied by scrape.yml.
        const written =
          /^\d{3}$/.test(value) || code.includes(`'${value}'`) || (label === 'part_of' && value === partOf);
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

  test("UrsMessagesHeld's description should name the holds on Redis's data not rebuilt, and its runbook row every code a message is held for", () => {
    const held = rules.find((rule) => rule.alert === 'UrsMessagesHeld');
    const description = held?.annotations?.['description'];
    expect(description).toMatch(/registrar has not rebuilt.*TENANTS_NOT_REBUILT/s);
    expect(description).toMatch(/publisher has not rebuilt.*REBUILD_FAILED, REBUILD_NEEDED/s);
    const codes = holdCodes();
    // The collection finds what it should: a code made with the option, one through a constant, one of a class.
    for (const known of [
      'REBUILD_FAILED',
      'PROFILE_NOT_READ_YET',
      'TENANTS_NOT_REBUILT',
      'SECRET_UNREADABLE',
    ])
      expect([known, codes.has(known)]).toEqual([known, true]);
    const row =
      read('README.md')
        .split('\n')
        .find((line) => line.startsWith('| `UrsMessagesHeld`')) ?? '';
    expect([...codes].filter((name) => !row.includes(`\`${name}\``))).toEqual([]);
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

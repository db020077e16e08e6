// deploy/prometheus/alerts.yml and scrape.yml run through Prometheus' own promtool: the rules parse, a
// configuration built around the scrape job loads and relabels each stage's pods as deploy/k8s runs them, and
// the rules' unit tests (deploy/prometheus/alerts.test.yml) fire each alert when, and only when, they should.
// promtool (2.x) comes from PROMTOOL, else <URS_STACK_DIR>/bin/promtool (npm run promtool:install puts it
// there), else PATH; without it these tests fail, naming the command that installs it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { kubeStateMetrics, read, registeredMetrics, root, stages } from './repo';

const INSTALL = 'npm run promtool:install (bash deploy/prometheus/install-promtool.sh)';

/** The promtool to run: PROMTOOL, else the one the install script extracted, else the first on PATH. */
function findPromtool(): string {
  const named = process.env['PROMTOOL'];
  if (named) {
    if (!fs.existsSync(named)) throw new Error(`PROMTOOL names ${named}, which does not exist`);
    return named;
  }
  const extracted = path.join(
    path.resolve(root, process.env['URS_STACK_DIR'] ?? '.stack'),
    'bin',
    'promtool',
  );
  const candidates = [
    extracted,
    ...(process.env['PATH'] ?? '').split(path.delimiter).map((dir) => path.join(dir, 'promtool')),
  ];
  const found = candidates.find((file) => {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
  if (found === undefined) {
    throw new Error(`promtool not found (PROMTOOL, ${extracted}, PATH): install it with ${INSTALL}`);
  }
  return found;
}

/**
 * The promtool to run, once it is known to be Prometheus 2's: alerts.test.yml's times and values are those of
 * Prometheus 2, whose range selectors hold the samples at both ends of a range; Prometheus 3 leaves out the
 * first one, which moves increase() values and times at a window's edge.
 */
function promtool2(): string {
  const file = findPromtool();
  const run = spawnSync(file, ['--version'], { encoding: 'utf8', timeout: 60_000 });
  const version = /version (\S+)/.exec(`${run.stdout}${run.stderr}`)?.[1];
  if (!version?.startsWith('2.')) {
    throw new Error(`${file} is promtool ${version ?? '(no version)'}, not 2.x: install one with ${INSTALL}`);
  }
  return file;
}

/**
 * promtool's exit status and what it printed (both streams: it reports failures on either). `test rules` over
 * alerts.test.yml takes ~35 s of CPU, over a minute on two cores shared with the other test workers.
 */
function promtool(...args: string[]): { status: number | null; output: string; stdout: string } {
  const run = spawnSync(promtool2(), args, { encoding: 'utf8', timeout: 240_000 });
  if (run.error) throw run.error;
  return { status: run.status, output: `${run.stdout}${run.stderr}`, stdout: run.stdout };
}

/** promtool exited 0 and said `text`; else the failure shows everything it printed. */
function expectSuccess(run: { status: number | null; output: string }, text: string): void {
  expect({ status: run.status, output: run.output }).toEqual({
    status: 0,
    output: expect.stringContaining(text),
  });
}

interface Rule {
  alert: string;
  annotations?: Record<string, string>;
}

interface RulesTest {
  rule_files: string[];
  tests: {
    name: string;
    input_series: { series: string; values: string }[];
    alert_rule_test?: { eval_time: string; alertname: string; exp_alerts: unknown[] }[];
  }[];
}

const alertsFile = 'deploy/prometheus/alerts.yml';
const alerts = parse(read(alertsFile)) as { groups: { name: string; rules: Rule[] }[] };
const alertNames = alerts.groups.flatMap((group) => group.rules.map((rule) => rule.alert));
const rulesTest = parse(read('deploy/prometheus/alerts.test.yml')) as RulesTest;
const scrape = parse(read('deploy/prometheus/scrape.yml')) as {
  scrape_configs: { job_name: string; kubernetes_sd_configs?: unknown; [field: string]: unknown }[];
};

let dir = '';
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'urs-promtool-'));
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * A whole Prometheus configuration as the README has an SRE build it: scrape.yml's jobs under
 * `scrape_configs:` and alerts.yml under `rule_files:`. Debian's promtool is built without Kubernetes
 * discovery ("field kubernetes_sd_configs not found"), so each job discovers its targets from `targetsFile`
 * instead: the relabelling, which is the part of the job that can go wrong, stays as it is.
 */
function prometheusConfig(targetsFile: string): string {
  const jobs = scrape.scrape_configs.map(({ kubernetes_sd_configs: discovery, ...job }) => {
    expect([job.job_name, discovery]).toEqual([job.job_name, [{ role: 'pod' }]]);
    return { ...job, file_sd_configs: [{ files: [targetsFile] }] };
  });
  return stringify({ rule_files: [path.join(root, alertsFile)], scrape_configs: jobs });
}

/** The labels and annotations of a stage's pods, from its Deployment in deploy/k8s. */
function podMetadata(stage: string): { labels: Record<string, string>; annotations: Record<string, string> } {
  const deployment = parseAllDocuments(read(`deploy/k8s/${stage}.yaml`))
    .map((document) => document.toJS() as { kind?: string; spec?: { template?: { metadata?: object } } })
    .find((manifest) => manifest.kind === 'Deployment');
  return { labels: {}, annotations: {}, ...deployment?.spec?.template?.metadata };
}

/** A file_sd target group of one pod, with the `__meta_kubernetes_pod_*` labels Kubernetes discovery gives it. */
function podTarget(stage: string, ip: string, address: string, name: string): Record<string, unknown> {
  const { labels, annotations } = podMetadata(stage);
  const meta = (kind: string, entries: Record<string, string>) =>
    Object.entries(entries).map(([key, value]) => [
      `__meta_kubernetes_pod_${kind}_${key.replace(/[^a-zA-Z0-9_]/g, '_')}`,
      value,
    ]);
  return {
    targets: [address],
    labels: {
      __meta_kubernetes_namespace: 'defender-urs',
      __meta_kubernetes_pod_name: name,
      __meta_kubernetes_pod_ip: ip,
      __meta_kubernetes_pod_phase: 'Running',
      ...Object.fromEntries(meta('label', labels)),
      ...Object.fromEntries(meta('annotation', annotations)),
    },
  };
}

/** A pod's target group as discovery gives it once the pod has ended (evicted: phase Failed). */
function failed(target: Record<string, unknown>): Record<string, unknown> {
  const labels = target['labels'] as Record<string, string>;
  return { ...target, labels: { ...labels, __meta_kubernetes_pod_phase: 'Failed' } };
}

/** A metric's label names as README's Metrics table gives them (values in parentheses left out). */
function documentedLabels(): Map<string, string[]> {
  const readme = read('README.md');
  const start = readme.indexOf('\n### Metrics\n');
  const section = readme.slice(start + 1, readme.indexOf('\n## ', start + 1));
  const labels = new Map<string, string[]>();
  for (const row of section.split('\n').filter((line) => line.startsWith('| `'))) {
    const [, metrics = '', , names = ''] = row.split('|');
    const label = [...names.replace(/\([^)]*\)/g, '').matchAll(/`([a-z_]+)`/g)].map((m) => m[1] as string);
    for (const metric of metrics.matchAll(/`([a-z_]+)`/g)) labels.set(metric[1] as string, label);
  }
  return labels;
}

describe('deploy/prometheus through promtool', () => {
  test('promtool check rules should accept alerts.yml', () => {
    const run = promtool('check', 'rules', path.join(root, alertsFile));
    expectSuccess(run, `SUCCESS: ${alertNames.length} rules found`);
  });

  test('promtool check config should accept the scrape job with alerts.yml as its rules', () => {
    const config = path.join(dir, 'prometheus.yml');
    fs.writeFileSync(config, prometheusConfig(path.join(dir, 'targets.json')));
    const run = promtool('check', 'config', config);
    expectSuccess(run, 'is valid prometheus config file syntax');
  });

  test("the scrape job should relabel each stage's pod into its job, address, pod, namespace and part_of", () => {
    const pods = stages.flatMap((stage) => [
      { stage, ip: '10.1.2.3', address: '10.1.2.3:8080', name: `${stage}-0` },
      { stage, ip: 'fd00:10:1::3', address: '[fd00:10:1::3]:8080', name: `${stage}-1` },
    ]);
    const targetsFile = path.join(dir, 'targets.json');
    fs.writeFileSync(
      targetsFile,
      JSON.stringify([
        ...pods.map(({ stage, ip, address, name }) => podTarget(stage, ip, address, name)),
        // Another pod of the namespace, not asking to be scraped.
        { targets: ['10.1.2.4:80'], labels: { __meta_kubernetes_namespace: 'defender-urs' } },
        // A stage's pod that was evicted: ended, it keeps its object, and here its IP.
        failed(podTarget(stages[0] ?? '', '10.1.2.5', '10.1.2.5:8080', `${stages[0] ?? ''}-2`)),
      ]),
    );
    const config = path.join(dir, 'discovery.yml');
    fs.writeFileSync(config, prometheusConfig(targetsFile));
    // promtool waits out its whole timeout for more targets: the file's are there within milliseconds.
    const run = promtool(
      'check',
      'service-discovery',
      '--timeout=2s',
      config,
      scrape.scrape_configs[0]?.job_name ?? '',
    );
    expectSuccess(run, '"labels"');
    // The scraped labels of each target (none for a target dropped), in no particular order.
    const keys = ['job', '__address__', 'instance', '__metrics_path__', 'pod', 'namespace', 'part_of'];
    const scraped = (labels: Record<string, string>) =>
      JSON.stringify(keys.filter((key) => key in labels).map((key) => [key, labels[key]]));
    const targets = (JSON.parse(run.stdout) as { labels: Record<string, string> }[]).map((target) =>
      scraped(target.labels),
    );
    const port = (stage: string) => podMetadata(stage).annotations['prometheus.io/port'] ?? '';
    const expected = pods.map(({ stage, ip, name }) => {
      const address = ip.includes(':') ? `[${ip}]:${port(stage)}` : `${ip}:${port(stage)}`;
      return scraped({
        job: stage,
        __address__: address,
        instance: address,
        __metrics_path__: '/metrics',
        pod: name,
        namespace: 'defender-urs',
        part_of: 'defender-urs',
      });
    });
    // The other pod and the evicted one are dropped: no labels.
    expect(targets.sort()).toEqual([...expected, scraped({}), scraped({})].sort());
  });

  test('promtool test rules should pass deploy/prometheus/alerts.test.yml', () => {
    // The rules without their descriptions: the expected alerts name their labels and summary only.
    const rules = structuredClone(alerts);
    for (const rule of rules.groups.flatMap((group) => group.rules)) delete rule.annotations?.['description'];
    fs.writeFileSync(path.join(dir, 'alerts.yml'), stringify(rules));
    expect(rulesTest.rule_files).toEqual(['alerts.yml']);
    fs.copyFileSync(path.join(root, 'deploy/prometheus/alerts.test.yml'), path.join(dir, 'alerts.test.yml'));
    const run = promtool('test', 'rules', path.join(dir, 'alerts.test.yml'));
    expectSuccess(run, 'SUCCESS');
  });

  test('alerts.test.yml should have, for every alert, a time it fires and a time it does not', () => {
    const cases = rulesTest.tests.flatMap((testCase) => testCase.alert_rule_test ?? []);
    const fires = new Set(cases.filter((c) => c.exp_alerts.length > 0).map((c) => c.alertname));
    const quiet = new Set(cases.filter((c) => c.exp_alerts.length === 0).map((c) => c.alertname));
    expect(alertNames.length).toBeGreaterThan(0);
    expect(alertNames.filter((name) => !fires.has(name))).toEqual([]);
    expect(alertNames.filter((name) => !quiet.has(name))).toEqual([]);
    // A case for an alert alerts.yml does not have would test nothing.
    expect([...fires, ...quiet].filter((name) => !alertNames.includes(name))).toEqual([]);
  });

  test('alerts.test.yml should feed the rules the metrics and labels the stages serve, as scraped', () => {
    const registered = registeredMetrics();
    const documented = documentedLabels();
    // What deploy/prometheus/scrape.yml adds to every series, and Prometheus' own `up`.
    const scraped = ['job', 'instance', 'pod', 'namespace', 'part_of'];
    const series = rulesTest.tests.flatMap((testCase) => testCase.input_series.map((input) => input.series));
    expect(series.length).toBeGreaterThan(0);
    for (const text of series) {
      const match = /^([a-z_]+)\{(.*)\}$/.exec(text);
      const name = match?.[1] ?? '';
      const labels = [...(match?.[2] ?? '').matchAll(/(\w+)="[^"]*"/g)].map((label) => label[1] as string);
      const bucket = /^(.+)_bucket$/.exec(name)?.[1];
      const metric = bucket !== undefined && registered.has(bucket) ? bucket : name;
      const kubeState = kubeStateMetrics[metric];
      expect([text, metric === 'up' || registered.has(metric) || kubeState !== undefined]).toEqual([
        text,
        true,
      ]);
      const allowed = [
        ...scraped,
        ...(documented.get(metric) ?? kubeState ?? []),
        ...(bucket === metric ? ['le'] : []),
      ];
      expect([text, labels.filter((label) => !allowed.includes(label))]).toEqual([text, []]);
      expect([text, labels.includes('namespace') && labels.includes('job')]).toEqual([text, true]);
    }
  });
});

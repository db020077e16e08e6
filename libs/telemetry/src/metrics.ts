/**
 * A small Prometheus registry (text exposition format 0.0.4): counters, gauges and histograms with
 * labels. Label values must never carry secrets; tenant ids are fine.
 */
type Labels = Record<string, string>;

function labelKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  return keys
    .map(
      (key) =>
        `${key}="${String(labels[key]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`,
    )
    .join(',');
}

function render(name: string, key: string, value: number, extra = ''): string {
  const labels = [key, extra].filter(Boolean).join(',');
  return `${name}${labels ? `{${labels}}` : ''} ${exposed(value)}`;
}

/** A sample's value as the text exposition format writes it: `NaN`, `+Inf` and `-Inf` by name. */
function exposed(value: number): string {
  if (Number.isFinite(value)) return String(value);
  if (Number.isNaN(value)) return 'NaN';
  return value > 0 ? '+Inf' : '-Inf';
}

interface Metric {
  readonly name: string;
  expose(): string;
}

export class Counter implements Metric {
  private readonly values = new Map<string, number>();
  constructor(
    readonly name: string,
    private readonly help: string,
  ) {}
  inc(labels: Labels = {}, by = 1): void {
    const key = labelKey(labels);
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }
  /**
   * Serves the series at 0 until its first increment (a series already counting keeps its value). Prometheus'
   * increase() and rate() count nothing before a series' first sample, so a series that appears with its first
   * event never shows that event: an alert on a single event (a dead letter, a refused registration) needs
   * the series there before it.
   */
  init(labels: Labels = {}): void {
    const key = labelKey(labels);
    if (!this.values.has(key)) this.values.set(key, 0);
  }
  get(labels: Labels = {}): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }
  expose(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const [key, value] of this.values) lines.push(render(this.name, key, value));
    return lines.join('\n');
  }
}

export class Gauge implements Metric {
  private readonly values = new Map<string, number>();
  constructor(
    readonly name: string,
    private readonly help: string,
    private readonly collect?: () => number,
  ) {}
  set(value: number, labels: Labels = {}): void {
    this.values.set(labelKey(labels), value);
  }
  inc(labels: Labels = {}, by = 1): void {
    const key = labelKey(labels);
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }
  dec(labels: Labels = {}, by = 1): void {
    this.inc(labels, -by);
  }
  /**
   * Stops serving the series until it is set again: a value that can no longer be read is better left out
   * than served as it last was (Prometheus marks the series stale at its next scrape).
   */
  remove(labels: Labels = {}): void {
    this.values.delete(labelKey(labels));
  }
  get(labels: Labels = {}): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }
  expose(): string {
    if (this.collect) this.values.set('', this.collect());
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`];
    for (const [key, value] of this.values) lines.push(render(this.name, key, value));
    return lines.join('\n');
  }
}

/** Default buckets in seconds, from 5 ms to 60 s. */
export const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class Histogram implements Metric {
  private readonly series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(
    readonly name: string,
    private readonly help: string,
    private readonly buckets: readonly number[] = DEFAULT_BUCKETS,
  ) {}
  observe(value: number, labels: Labels = {}): void {
    const key = labelKey(labels);
    let entry = this.series.get(key);
    if (!entry) {
      entry = { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.series.set(key, entry);
    }
    for (let i = 0; i < this.buckets.length; i++) {
      if (value <= (this.buckets[i] as number)) entry.counts[i] = (entry.counts[i] as number) + 1;
    }
    entry.sum += value;
    entry.count += 1;
  }
  expose(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const [key, entry] of this.series) {
      this.buckets.forEach((bound, i) =>
        lines.push(render(`${this.name}_bucket`, key, entry.counts[i] as number, `le="${bound}"`)),
      );
      lines.push(render(`${this.name}_bucket`, key, entry.count, 'le="+Inf"'));
      lines.push(render(`${this.name}_sum`, key, entry.sum));
      lines.push(render(`${this.name}_count`, key, entry.count));
    }
    return lines.join('\n');
  }
}

export class Registry {
  private readonly metrics = new Map<string, Metric>();

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics ?? true) {
      this.gauge('process_resident_memory_bytes', 'Resident memory size in bytes.', () =>
        process.memoryUsage.rss(),
      );
      this.gauge('nodejs_heap_used_bytes', 'V8 heap in use, in bytes.', () => process.memoryUsage().heapUsed);
      this.gauge('process_uptime_seconds', 'Seconds since the process started.', () => process.uptime());
    }
  }

  counter(name: string, help: string): Counter {
    return this.register(new Counter(name, help));
  }
  gauge(name: string, help: string, collect?: () => number): Gauge {
    return this.register(new Gauge(name, help, collect));
  }
  histogram(name: string, help: string, buckets?: readonly number[]): Histogram {
    return this.register(new Histogram(name, help, buckets));
  }

  expose(): string {
    return `${[...this.metrics.values()].map((metric) => metric.expose()).join('\n')}\n`;
  }

  private register<T extends Metric>(metric: T): T {
    const existing = this.metrics.get(metric.name);
    if (existing) return existing as T;
    this.metrics.set(metric.name, metric);
    return metric;
  }
}

import type { CoresInterval } from '../src/analysis';
import { escapeXml, mergeCpuColumns, renderTimeline, tickStepMs } from '../src/timeline';

describe('tickStepMs', () => {
  it('tickStepMs should pick 1, 2 or 5 times a power of ten', () => {
    expect(tickStepMs(10_000, 10)).toBe(1_000);
    expect(tickStepMs(15_000, 10)).toBe(2_000);
    expect(tickStepMs(40_000, 10)).toBe(5_000);
  });
});

describe('renderTimeline', () => {
  it('renderTimeline should draw every lane, the markers and escaped text', () => {
    const svg = renderTimeline({
      title: 'cycle <1>',
      subtitle: 'a & b',
      startMs: 0,
      endMs: 10_000,
      devices: 1000,
      listed: [
        { t: 100, n: 500 },
        { t: 200, n: 500 },
      ],
      inFlight: [
        { t: 300, value: 10 },
        { t: 5_000, value: 10 },
        { t: 9_000, value: 0 },
      ],
      slots: 10,
      enriched: [
        { t: 3_000, count: 500 },
        { t: 8_000, count: 1000 },
      ],
      scored: [
        { t: 3_100, count: 500 },
        { t: 8_100, count: 1000 },
      ],
      published: [
        { t: 3_200, count: 500 },
        { t: 8_200, count: 1000 },
      ],
      markers: [
        { t: 8_000, label: 'last vulnerability response', colour: '#c77800' },
        { t: 8_300, label: 'vms.risk-summary', colour: '#b03b6f' },
      ],
      cpu: [
        { t: 0, until: 5_000, cores: { 'vuln-fetcher': 1, scorer: 0, kafka: 0.25 } },
        { t: 5_000, until: 10_000, cores: { 'vuln-fetcher': 0.5, scorer: 0.75, 'other-process': 0.1 } },
      ],
      cpus: 2,
    });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trim().endsWith('</svg>')).toBe(true);
    for (const lane of [
      'list devices',
      'vuln fetches (in flight)',
      'enrich (devices)',
      'score (devices)',
      'publish (VMS records)',
      'CPU by process (cores)',
    ]) {
      expect(svg).toContain(lane);
    }
    // The CPU lane: a legend of the processes that used any CPU, stacked columns in their colours, the cores line.
    expect(svg).toContain('2 cores');
    for (const name of ['vuln-fetcher', 'scorer', 'kafka', 'other-process'])
      expect(svg).toContain(`>${name}</text>`);
    expect((svg.match(/fill="#c77800"\/>/g) ?? []).length).toBeGreaterThanOrEqual(2);
    expect(svg).toContain('fill="#7a4fb0"/>');
    expect(svg).toContain('cycle &lt;1&gt;');
    expect(svg).toContain('a &amp; b');
    expect(svg).toContain('2 batches');
    expect(svg).toContain('vms.risk-summary');
    expect(svg).toContain('10 s');
  });

  it('mergeCpuColumns should average each process over columns of equal time, keeping its CPU seconds', () => {
    const intervals: CoresInterval[] = Array.from({ length: 10 }, (_, i) => ({
      t: i * 100,
      until: (i + 1) * 100,
      cores: { scorer: i < 5 ? 1 : 0, kafka: 0.5 },
    }));
    expect(mergeCpuColumns(intervals, 20)).toEqual(intervals);
    const merged = mergeCpuColumns(intervals, 4);
    expect(merged.map((column) => [column.t, column.until])).toEqual([
      [0, 250],
      [250, 500],
      [500, 750],
      [750, 1000],
    ]);
    expect(merged.map((column) => column.cores['scorer'])).toEqual([1, 1, 0, 0]);
    for (const column of merged) expect(column.cores['kafka']).toBeCloseTo(0.5, 9);
    const seconds = (columns: CoresInterval[]): number =>
      columns.reduce(
        (sum, column) => sum + ((column.cores['scorer'] ?? 0) * (column.until - column.t)) / 1000,
        0,
      );
    expect(seconds(merged)).toBeCloseTo(seconds(intervals), 9);
  });

  it('escapeXml should escape markup characters', () => {
    expect(escapeXml('<a href="x">&</a>')).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;');
  });
});

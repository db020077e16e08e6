import { escapeXml, renderTimeline, tickStepMs } from '../src/timeline';

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
    });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trim().endsWith('</svg>')).toBe(true);
    for (const lane of [
      'list devices',
      'vuln fetches (in flight)',
      'enrich (devices)',
      'score (devices)',
      'publish (VMS records)',
    ]) {
      expect(svg).toContain(lane);
    }
    expect(svg).toContain('cycle &lt;1&gt;');
    expect(svg).toContain('a &amp; b');
    expect(svg).toContain('2 batches');
    expect(svg).toContain('vms.risk-summary');
    expect(svg).toContain('10 s');
  });

  it('escapeXml should escape markup characters', () => {
    expect(escapeXml('<a href="x">&</a>')).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;');
  });
});

import type { CoresInterval, Progress } from './analysis';

/** What one cycle's picture shows; times are ms epoch. */
export interface TimelineInput {
  title: string;
  subtitle: string;
  startMs: number;
  endMs: number;
  devices: number;
  /** Device batches produced (the listing): time and devices in the batch. */
  listed: { t: number; n: number }[];
  /** Simulator calls in flight over time (sampled). */
  inFlight: { t: number; value: number }[];
  slots: number;
  enriched: Progress;
  scored: Progress;
  published: Progress;
  /** Vertical lines across every lane (last vulnerability response, summary record). */
  markers: { t: number; label: string; colour: string }[];
  /** Cores each process used over time (services, broker, Redis, simulator). */
  cpu: CoresInterval[];
  /** Cores of the machine: the CPU lane's reference line. */
  cpus: number;
}

const WIDTH = 1100;
const LEFT = 170;
const RIGHT = 30;
const TOP = 96;
const LANE = 78;
const GAP = 12;
const LANES = [
  'list devices',
  'vuln fetches (in flight)',
  'enrich (devices)',
  'score (devices)',
  'publish (VMS records)',
  'CPU by process (cores)',
];

/** The CPU lane's processes, bottom to top, and their colours; others follow in grey. */
const PROCESS_COLOURS: [string, string][] = [
  ['poller', '#2a6fb0'],
  ['vuln-fetcher', '#c77800'],
  ['scorer', '#7a4fb0'],
  ['publisher', '#b03b6f'],
  ['registrar', '#6b8e23'],
  ['kafka', '#3b8f3b'],
  ['redis', '#d04a3a'],
  ['simulator', '#8a8f98'],
];

/** At most this many columns in the CPU lane: longer runs are merged into columns of equal time. */
const CPU_COLUMNS = 300;

/**
 * The intervals merged into at most `columns` columns of equal duration, each process's cores averaged over
 * the time its column covers.
 */
export function mergeCpuColumns(intervals: readonly CoresInterval[], columns = CPU_COLUMNS): CoresInterval[] {
  if (intervals.length <= columns) return [...intervals];
  const start = (intervals[0] as CoresInterval).t;
  const end = (intervals.at(-1) as CoresInterval).until;
  const width = (end - start) / columns;
  const merged: CoresInterval[] = Array.from({ length: columns }, (_, i) => ({
    t: start + i * width,
    until: start + (i + 1) * width,
    cores: {},
  }));
  for (const interval of intervals) {
    const first = Math.max(0, Math.floor((interval.t - start) / width));
    const last = Math.min(columns - 1, Math.floor((interval.until - start - 1e-9) / width));
    for (let i = first; i <= last; i++) {
      const column = merged[i] as CoresInterval;
      const overlap = Math.min(interval.until, column.until) - Math.max(interval.t, column.t);
      if (overlap <= 0) continue;
      for (const [name, cores] of Object.entries(interval.cores)) {
        column.cores[name] = (column.cores[name] ?? 0) + (cores * overlap) / width;
      }
    }
  }
  return merged;
}

export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A round tick step (1, 2, 5 × 10^n) giving at most `maxTicks` ticks over `rangeMs`. */
export function tickStepMs(rangeMs: number, maxTicks = 12): number {
  const raw = Math.max(1, rangeMs / maxTicks);
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const factor of [1, 2, 5, 10]) if (factor * power >= raw) return factor * power;
  return 10 * power;
}

function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

/** A hand-written SVG of one cycle: one lane per stage, a shared time axis, markers across lanes. */
export function renderTimeline(input: TimelineInput): string {
  const range = Math.max(1, input.endMs - input.startMs);
  const plotWidth = WIDTH - LEFT - RIGHT;
  const x = (t: number): number =>
    LEFT + (Math.min(Math.max(t, input.startMs), input.endMs) - input.startMs) * (plotWidth / range);
  const laneTop = (i: number): number => TOP + i * (LANE + GAP);
  const height = laneTop(LANES.length) + 40;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="${LEFT}" y="22" font-size="16" font-weight="bold">${escapeXml(input.title)}</text>`);
  out.push(`<text x="${LEFT}" y="42" fill="#444">${escapeXml(input.subtitle)}</text>`);
  LANES.forEach((name, i) => {
    const top = laneTop(i);
    out.push(
      `<rect x="${LEFT}" y="${top}" width="${plotWidth}" height="${LANE}" fill="#f5f6f8" stroke="#d0d4da"/>`,
    );
    out.push(`<text x="${LEFT - 8}" y="${top + LANE / 2 + 4}" text-anchor="end">${escapeXml(name)}</text>`);
  });
  // Lane 0: one tick per device batch, the listing's span shaded.
  {
    const top = laneTop(0);
    if (input.listed.length > 0) {
      const last = Math.max(...input.listed.map((event) => event.t));
      out.push(
        `<rect x="${x(input.startMs).toFixed(1)}" y="${top + 8}" width="${Math.max(1, x(last) - x(input.startMs)).toFixed(1)}" height="${LANE - 16}" fill="#cfe3f7"/>`,
      );
      for (const event of input.listed)
        out.push(
          `<line x1="${x(event.t).toFixed(1)}" x2="${x(event.t).toFixed(1)}" y1="${top + 8}" y2="${top + LANE - 8}" stroke="#2a6fb0" stroke-width="1"/>`,
        );
      out.push(
        `<text x="${(x(last) + 4).toFixed(1)}" y="${top + 16}" fill="#2a6fb0">${input.listed.length} batches, last at +${fmt((last - input.startMs) / 1000)} s</text>`,
      );
    }
  }
  // Lane 1: calls in flight, with the slot limit.
  {
    const top = laneTop(1);
    const max = Math.max(input.slots, ...input.inFlight.map((point) => point.value));
    const y = (value: number): number => top + LANE - 4 - (value / max) * (LANE - 12);
    if (input.inFlight.length > 0) {
      const points = input.inFlight.filter((point) => point.t >= input.startMs && point.t <= input.endMs);
      const path = points
        .map((point, i) => `${i === 0 ? 'M' : 'L'}${x(point.t).toFixed(1)},${y(point.value).toFixed(1)}`)
        .join(' ');
      if (points.length > 0) {
        const first = points[0] as { t: number };
        const last = points.at(-1) as { t: number };
        out.push(
          `<path d="${path} L${x(last.t).toFixed(1)},${y(0).toFixed(1)} L${x(first.t).toFixed(1)},${y(0).toFixed(1)} Z" fill="#f3c58b" stroke="#c77800" stroke-width="1"/>`,
        );
      }
    }
    out.push(
      `<line x1="${LEFT}" x2="${LEFT + plotWidth}" y1="${y(input.slots).toFixed(1)}" y2="${y(input.slots).toFixed(1)}" stroke="#c00" stroke-dasharray="4 3"/>`,
    );
    out.push(
      `<text x="${LEFT + plotWidth - 4}" y="${(y(input.slots) - 3).toFixed(1)}" text-anchor="end" fill="#c00">${input.slots} slots</text>`,
    );
  }
  // Lanes 2–4: cumulative devices through each stage.
  const curves: [Progress, string][] = [
    [input.enriched, '#3b8f3b'],
    [input.scored, '#7a4fb0'],
    [input.published, '#b03b6f'],
  ];
  curves.forEach(([curve, colour], index) => {
    const top = laneTop(index + 2);
    const total = Math.max(1, input.devices, ...curve.map((point) => point.count));
    const y = (count: number): number => top + LANE - 4 - (count / total) * (LANE - 12);
    if (curve.length > 0) {
      let d = `M${x(input.startMs).toFixed(1)},${y(0).toFixed(1)}`;
      let previous = 0;
      for (const point of curve) {
        d += ` L${x(point.t).toFixed(1)},${y(previous).toFixed(1)} L${x(point.t).toFixed(1)},${y(point.count).toFixed(1)}`;
        previous = point.count;
      }
      out.push(`<path d="${d}" fill="none" stroke="${colour}" stroke-width="1.5"/>`);
      const first = curve[0] as { t: number };
      const last = curve.at(-1) as { t: number; count: number };
      out.push(
        `<text x="${LEFT + 4}" y="${top + 14}" fill="${colour}">${last.count} devices, +${fmt((first.t - input.startMs) / 1000)} s → +${fmt((last.t - input.startMs) / 1000)} s</text>`,
      );
    }
  });
  // Lane 5: cores used by each process, stacked, against the machine's cores.
  {
    const top = laneTop(5);
    const columns = mergeCpuColumns(
      input.cpu.filter((interval) => interval.until > input.startMs && interval.t < input.endMs),
    );
    const names = [...new Set(columns.flatMap((column) => Object.keys(column.cores)))];
    const order = [
      ...PROCESS_COLOURS.map(([name]) => name).filter((name) => names.includes(name)),
      ...names.filter((name) => !PROCESS_COLOURS.some(([known]) => known === name)).sort(),
    ];
    const colour = (name: string): string =>
      PROCESS_COLOURS.find(([known]) => known === name)?.[1] ?? '#b8bcc4';
    const stacked = (column: CoresInterval): number =>
      Object.values(column.cores).reduce((sum, cores) => sum + cores, 0);
    const max = Math.max(input.cpus, ...columns.map(stacked));
    const y = (cores: number): number => top + LANE - 4 - (cores / max) * (LANE - 24);
    for (const column of columns) {
      const left = x(column.t);
      const width = Math.max(0.5, x(column.until) - left);
      let below = 0;
      for (const name of order) {
        const cores = column.cores[name] ?? 0;
        if (cores <= 0) continue;
        out.push(
          `<rect x="${left.toFixed(1)}" y="${y(below + cores).toFixed(1)}" width="${width.toFixed(1)}" height="${(y(below) - y(below + cores)).toFixed(1)}" fill="${colour(name)}"/>`,
        );
        below += cores;
      }
    }
    out.push(
      `<line x1="${LEFT}" x2="${LEFT + plotWidth}" y1="${y(input.cpus).toFixed(1)}" y2="${y(input.cpus).toFixed(1)}" stroke="#c00" stroke-dasharray="4 3"/>`,
    );
    out.push(
      `<text x="${LEFT + plotWidth - 4}" y="${(y(input.cpus) - 3).toFixed(1)}" text-anchor="end" fill="#c00">${input.cpus} cores</text>`,
    );
    let legendX = LEFT + 4;
    for (const name of order.filter((name) => columns.some((column) => (column.cores[name] ?? 0) > 0))) {
      out.push(`<rect x="${legendX}" y="${top + 5}" width="9" height="9" fill="${colour(name)}"/>`);
      out.push(`<text x="${legendX + 12}" y="${top + 13}" font-size="10">${escapeXml(name)}</text>`);
      legendX += 18 + name.length * 6;
    }
  }
  // Markers across lanes.
  for (const marker of input.markers) {
    const mx = x(marker.t).toFixed(1);
    out.push(
      `<line x1="${mx}" x2="${mx}" y1="${TOP - 6}" y2="${laneTop(LANES.length) - GAP}" stroke="${marker.colour}" stroke-width="1.5" stroke-dasharray="6 3"/>`,
    );
  }
  input.markers.forEach((marker, i) => {
    out.push(
      `<text x="${(x(marker.t) - 4).toFixed(1)}" y="${TOP - 10 - i * 14}" text-anchor="end" fill="${marker.colour}">${escapeXml(marker.label)}</text>`,
    );
  });
  // Time axis.
  const axisY = laneTop(LANES.length) - GAP + 4;
  const step = tickStepMs(range);
  out.push(`<line x1="${LEFT}" x2="${LEFT + plotWidth}" y1="${axisY}" y2="${axisY}" stroke="#333"/>`);
  for (let t = 0; t <= range + 1e-9; t += step) {
    const tx = (LEFT + t * (plotWidth / range)).toFixed(1);
    out.push(`<line x1="${tx}" x2="${tx}" y1="${axisY}" y2="${axisY + 5}" stroke="#333"/>`);
    out.push(`<text x="${tx}" y="${axisY + 18}" text-anchor="middle">${fmt(t / 1000)} s</text>`);
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

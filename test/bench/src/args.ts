import { parseArgs } from 'node:util';

/** What a bench run measures, from `npm run bench -- <flags>`. */
export interface BenchOptions {
  /** Fleet sizes of the slot-utilisation runs (one tenant each). `--sizes`, default 1000,10000,100000. */
  sizes: number[];
  /** Mean simulator latency of every Entra/MDE call, in ms. `--latency`, default 50. */
  latencyMs: number;
  /** Uniform ± jitter around the mean, in ms. `--jitter`, default 0. */
  jitterMs: number;
  /** Tenants whose cycles run at once in the latency scenario (0 skips it). `--cycle-tenants`, default 6. */
  cycleTenants: number;
  /** Devices of each of those tenants. `--cycle-devices`, default 1000. */
  cycleDevices: number;
  /** Devices of the internal-ceiling run at latency 0 (0 skips it). `--internal-devices`, default 50000. */
  internalDevices: number;
  /**
   * Runs of the internal-ceiling scenario, each with fresh services; the ceiling reported is their median
   * (run-to-run spread on a shared 2-core machine is ±10–25 %). `--internal-runs`, default 3.
   */
  internalRuns: number;
  /**
   * Devices of a cycle each internal run sends through its fresh services before its measured window
   * (0: none, the window then includes their warm-up). `--internal-warmup`, default 20000.
   */
  internalWarmup: number;
  /** Devices of the bulk export run under Microsoft's quotas (0 skips it). `--bulk-devices`, default 100000. */
  bulkDevices: number;
  /**
   * Devices given another device's vulnerabilities in the simulator between the `bulk-next` scenario's two
   * cycles; 0 leaves Microsoft's snapshot as it was, as for most cycles (it is regenerated every 6 hours):
   * the next cycle then reads no export (with `--env URS_BULK_SKIP_UNCHANGED=false`, the same export again).
   * `--bulk-next-changed`, default 1 % of `--bulk-devices`.
   */
  bulkNextChanged: number;
  /**
   * Cycles of the `bulk-next` scenario measured after its next cycle with nothing changed in between (mode
   * `bulk-same`): Microsoft's snapshot is the one the latest export was read from, as it is for 35 of a
   * 10-minute tenant's 36 cycles, so the cycle reads no export. Each adds one poll interval (60 s) to the run.
   * `--bulk-same-cycles`, default 1 (0 leaves them out).
   */
  bulkSameCycles: number;
  /**
   * Mean SoftwareVulnerabilitiesByMachine rows per device of every simulated fleet (`fleet.exportRowsPerDevice`
   * of the simulator: vulnerable devices' CVEs scaled to match, the rest inventory rows without a CVE).
   * Unset: the simulator's light mix, ~5.7 rows (~5 KB) per device, which earlier results were taken with;
   * real Windows fleets list tens to hundreds. `--export-rows-per-device`, default unset.
   */
  exportRowsPerDevice: number | undefined;
  /**
   * Share of those rows without a CVE (installed software), 0–1 (`fleet.exportSoftwareOnlyShare`).
   * Unset: the light mix's 1 %. `--export-software-only`, default unset.
   */
  exportSoftwareOnlyShare: number | undefined;
  /**
   * Who starts cycles: `poller` (the real poller lists the devices), `inject` (the bench lists the
   * simulator's fleet and produces the device batches itself, the poller is not started), `auto`
   * (poller when it can be told to use per-device calls, else inject). `--driver`, default auto.
   */
  driver: 'auto' | 'poller' | 'inject';
  /** `private`: a redis-server of the bench's own (exact command statistics); `shared`: REDIS_URL. `--redis`, default private. */
  redis: 'private' | 'shared';
  /** Period of the simulator statistics sampler, in ms. `--sample-ms`, default 50. */
  sampleMs: number;
  /** Where results go. `--out`, default bench/results. */
  outDir: string;
  /** Leave a Kafka broker the bench had to start running at the end. `--keep-stack`, default false. */
  keepStack: boolean;
  /** Longest wait for one cycle, in ms, on top of the expected duration. `--slack-ms`, default 120000. */
  slackMs: number;
  /** Services to run with `--cpu-prof` (profiles land in the run's log directory). `--profile`, default none. */
  profile: string[];
  /** Extra variables for every service, e.g. `--env URS_VULN_CONCURRENCY=20` (repeatable). */
  env: Record<string, string>;
  /**
   * Processes of a stage in every scenario, as SREs scale a pool (`--replicas vuln-fetcher=2,scorer=2`),
   * default 1 each. Replicas share their stage's consumer group and, for the vuln-fetcher, the 10 call slots;
   * each reports its own RSS and CPU as `<stage>#<n>`. The registrar stays one (it owns the REST port).
   */
  replicas: Partial<Record<ScalableService, number>>;
}

export class UsageError extends Error {}

const SERVICE_NAMES = ['registrar', 'poller', 'vuln-fetcher', 'scorer', 'publisher'] as const;
const SCALABLE_SERVICES = ['poller', 'vuln-fetcher', 'scorer', 'publisher'] as const;
export type ScalableService = (typeof SCALABLE_SERVICES)[number];
/** Most processes of one stage: the bench machine has 2 cores. */
const MAX_REPLICAS = 4;

function positiveList(text: string, flag: string): number[] {
  const items = text
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
  if (items.length === 0) throw new UsageError(`${flag} needs at least one number`);
  // 0 skips the fleet runs (`--sizes 0`), so other scenarios can run alone.
  return items.map((item) => wholeNumber(item, flag, 0)).filter((size) => size > 0);
}

function wholeNumber(text: string, flag: string, min: number): number {
  const clean = text.replace(/_/g, '');
  if (!/^\d+$/.test(clean) || Number(clean) < min)
    throw new UsageError(`${flag} must be a whole number ≥ ${min} (got "${text}")`);
  return Number(clean);
}

/** A decimal number in [min, max], or undefined when the flag is absent. */
function decimal(text: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text.replace(/_/g, ''));
  if (!/^\d[\d_]*(\.\d+)?$/.test(text) || !(value >= min && value <= max))
    throw new UsageError(`${flag} must be a number from ${min} to ${max} (got "${text}")`);
  return value;
}

function oneOf<T extends string>(text: string, flag: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(text))
    throw new UsageError(`${flag} must be one of ${allowed.join(', ')} (got "${text}")`);
  return text as T;
}

function replicasOf(text: string): Partial<Record<ScalableService, number>> {
  const replicas: Partial<Record<ScalableService, number>> = {};
  for (const item of text.split(',').map((part) => part.trim())) {
    const match = /^([a-z-]+)=(\d+)$/.exec(item);
    if (!match)
      throw new UsageError(`--replicas takes stage=count pairs, e.g. vuln-fetcher=2 (got "${item}")`);
    const name = oneOf(match[1] as string, '--replicas', SCALABLE_SERVICES);
    const count = Number(match[2]);
    if (count < 1 || count > MAX_REPLICAS)
      throw new UsageError(`--replicas ${name} must be 1 to ${MAX_REPLICAS} (got ${count})`);
    replicas[name] = count;
  }
  return replicas;
}

export function parseBenchArgs(argv: readonly string[]): BenchOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      options: {
        sizes: { type: 'string' },
        latency: { type: 'string' },
        jitter: { type: 'string' },
        'cycle-tenants': { type: 'string' },
        'cycle-devices': { type: 'string' },
        'internal-devices': { type: 'string' },
        'internal-runs': { type: 'string' },
        'internal-warmup': { type: 'string' },
        'bulk-devices': { type: 'string' },
        'bulk-next-changed': { type: 'string' },
        'bulk-same-cycles': { type: 'string' },
        'export-rows-per-device': { type: 'string' },
        'export-software-only': { type: 'string' },
        driver: { type: 'string' },
        redis: { type: 'string' },
        'sample-ms': { type: 'string' },
        out: { type: 'string' },
        'keep-stack': { type: 'boolean' },
        'slack-ms': { type: 'string' },
        profile: { type: 'string' },
        env: { type: 'string', multiple: true },
        replicas: { type: 'string' },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const bulkDevices = wholeNumber(values['bulk-devices'] ?? '100000', '--bulk-devices', 0);
  return {
    sizes: values.sizes === undefined ? [1_000, 10_000, 100_000] : positiveList(values.sizes, '--sizes'),
    latencyMs: wholeNumber(values.latency ?? '50', '--latency', 0),
    jitterMs: wholeNumber(values.jitter ?? '0', '--jitter', 0),
    cycleTenants: wholeNumber(values['cycle-tenants'] ?? '6', '--cycle-tenants', 0),
    cycleDevices: wholeNumber(values['cycle-devices'] ?? '1000', '--cycle-devices', 1),
    internalDevices: wholeNumber(values['internal-devices'] ?? '50000', '--internal-devices', 0),
    internalRuns: wholeNumber(values['internal-runs'] ?? '3', '--internal-runs', 1),
    internalWarmup: wholeNumber(values['internal-warmup'] ?? '20000', '--internal-warmup', 0),
    bulkDevices,
    bulkNextChanged:
      values['bulk-next-changed'] === undefined
        ? Math.max(1, Math.round(bulkDevices / 100))
        : wholeNumber(values['bulk-next-changed'], '--bulk-next-changed', 0),
    bulkSameCycles: wholeNumber(values['bulk-same-cycles'] ?? '1', '--bulk-same-cycles', 0),
    exportRowsPerDevice: decimal(values['export-rows-per-device'], '--export-rows-per-device', 0.1, 1_000),
    exportSoftwareOnlyShare: decimal(values['export-software-only'], '--export-software-only', 0, 0.99),
    driver: oneOf(values.driver ?? 'auto', '--driver', ['auto', 'poller', 'inject'] as const),
    redis: oneOf(values.redis ?? 'private', '--redis', ['private', 'shared'] as const),
    sampleMs: wholeNumber(values['sample-ms'] ?? '50', '--sample-ms', 10),
    outDir: values.out ?? 'bench/results',
    keepStack: values['keep-stack'] ?? false,
    slackMs: wholeNumber(values['slack-ms'] ?? '120000', '--slack-ms', 1_000),
    env: Object.fromEntries(
      (values.env ?? []).map((pair) => {
        const match = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(pair);
        if (!match) throw new UsageError(`--env must be NAME=value with an upper-case name (got "${pair}")`);
        return [match[1] as string, match[2] as string];
      }),
    ),
    replicas: values.replicas === undefined ? {} : replicasOf(values.replicas),
    profile:
      values.profile === undefined
        ? []
        : values.profile.split(',').map((name) => oneOf(name.trim(), '--profile', SERVICE_NAMES)),
  };
}

export const USAGE = `npm run bench -- [--sizes 1000,10000,100000] [--latency 50] [--jitter 0]
  [--cycle-tenants 6] [--cycle-devices 1000] [--internal-devices 50000] [--internal-runs 3]
  [--internal-warmup 20000]
  [--bulk-devices 100000] [--bulk-next-changed 1000] [--bulk-same-cycles 1]
  [--export-rows-per-device 57] [--export-software-only 0.5]
  [--driver auto|poller|inject] [--redis private|shared] [--sample-ms 50] [--out bench/results]
  [--keep-stack] [--slack-ms 120000] [--profile vuln-fetcher,scorer]
  [--env NAME=value]... [--replicas vuln-fetcher=2,scorer=2]
A size or device count of 0 skips that scenario.`;

/** Export rows per device of the simulator's light mix (its fleets without an export volume). */
const LIGHT_EXPORT_ROWS_PER_DEVICE = 5.74;
/** The vuln-fetcher's `URS_BULK_PAGE_SIZE` default. */
const DEFAULT_BULK_PAGE_SIZE = 50_000;
/** The `bulk-next` scenario's poll-interval unit for a light export: a 10-"minute" interval of 60 s. */
export const BULK_NEXT_UNIT_MS = 6_000;

/**
 * The poll-interval unit (`URS_POLL_INTERVAL_UNIT_MS`) of the `bulk-next` scenario, whose interval is 10
 * units. The unit shortens the interval but not Microsoft's quota of the export, 30 calls a minute, which
 * the simulator holds to: a heavier export than the light mix (`--export-rows-per-device`) needs more pages
 * than that quota lets through in 60 s (50,000 devices at 57 rows: 57 pages, read in ~80 s), and a cycle
 * whose export is read after the next cycle started is closed with every device failed. The interval then
 * holds the read, a page a second for the quota's first 30 and one every 2 s after them, 1.5 times over,
 * and 30 s to score and publish the fleet. `--env URS_POLL_INTERVAL_UNIT_MS` sets it outright.
 */
export function bulkNextUnitMs(
  options: Pick<BenchOptions, 'bulkDevices' | 'exportRowsPerDevice' | 'env'>,
): number {
  const forced = options.env['URS_POLL_INTERVAL_UNIT_MS'];
  if (forced !== undefined && /^\d+$/.test(forced)) return Number(forced);
  const pageSize =
    Number(options.env['URS_BULK_PAGE_SIZE'] ?? DEFAULT_BULK_PAGE_SIZE) || DEFAULT_BULK_PAGE_SIZE;
  const rows = options.bulkDevices * (options.exportRowsPerDevice ?? LIGHT_EXPORT_ROWS_PER_DEVICE);
  const pages = Math.ceil(rows / pageSize);
  const readMs = pages * 1_000 + Math.max(0, pages - 30) * 2_000;
  return Math.max(BULK_NEXT_UNIT_MS, Math.ceil((readMs * 1.5 + 30_000) / 10_000) * 1_000);
}

import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import {
  fromExportSnapshot,
  toDeviceRecord,
  vulnerabilitiesNotHeld,
  type ExportSnapshot,
} from '@urs/contracts';
import {
  DEFENDER_CLOUDS,
  DEFENDER_REGIONS,
  DefenderError,
  DefenderErrorCode,
  type DefenderClient,
  type Machine,
  type MachinePage,
  type Vulnerability,
  chooseVulnerabilityMode,
  createDefenderClient,
  listedMachine,
} from '@urs/defender';
import { createLogger } from '@urs/logging';
import { errorMessage } from '@urs/resilience';
import { argumentsError } from '../args';
import type { Command, CommandIo } from '../command';
import { type Backend, openBackend } from './defender/backend';

const USAGE = `usage: urs defender devices --azure-tenant-id T --client-id C --client-secret-file F [options]
       urs defender check   --azure-tenant-id T --client-id C --client-secret-file F [--cloud X] [--region R]

devices   writes the tenant's devices as NDJSON machine records on stdout (pipe into 'urs score'), those
          the pipeline scores: every device but one merged into another (its surviving device is listed);
          progress and errors go to stderr
check     says in one line whether the credentials and the consent work, whether the devices and
          their vulnerabilities can be read (the licence), and which of Machine.Read.All and
          Vulnerability.Read.All (what the pipeline reads) the token carries; a tenant whose API quota
          holds its calls back more than 30 s is told so at once, with for how long

  --azure-tenant-id T        Directory (tenant) ID
  --client-id C              Application (client) ID
  --client-secret-file F     file holding the client secret's Value (never pass a secret as an argument)
  --cloud X                  commercial (default), gcc, gcc-high, dod
  --region R                 us, eu, uk, au, swa, ina, aea; default the global host
  --page-size N              devices per request, 1–10000 (default 10000)
  --with-vulnerabilities     add "vulnerabilities" to each record: an array, or null where they are not known,
                             then with "fetchError": {"code"} saying why (urs score reads it), as the pipeline
                             has them: a device excluded from vulnerability management is not asked for (EXCLUDED);
                             in bulk mode a device the export does not list has none, unless it was first seen
                             too recently for the export's snapshot (NOT_IN_EXPORT_SNAPSHOT)
  --vulnerabilities-mode M   per-device, bulk or auto (default): auto takes the bulk export when more than 250
                             devices would each cost a per-device call (50/min: over 5 minutes), one excluded
                             from vulnerability management costing none, as the pipeline counts them; the
                             pipeline's threshold follows the tenant's interval (~1,200 hourly): give its mode
                             (the tenant's status) for an exact dry run
  --no-redis                 do not share the pipeline's limiter and quota through Redis

Environment: URS_DEFENDER_AUTHORITY_HOST, URS_DEFENDER_API_BASE (e.g. the simulator; trust its CA with
NODE_EXTRA_CA_CERTS or URS_DEFENDER_CA_FILE), URS_DEFENDER_SCOPE (government clouds only; or
URS_DEFENDER_SCOPE_GCC, URS_DEFENDER_SCOPE_GCC_HIGH, URS_DEFENDER_SCOPE_DOD as the services read them),
REDIS_URL, URS_REDIS_PREFIX, URS_DEFENDER_MAX_IN_FLIGHT (set it as the services have it: a run sharing
their limiter writes it there, default 10).
Exit status: 0 done; 1 the tenant could not be read (the error says what to fix); 2 bad usage.`;

/**
 * Above this many devices that would each cost a per-device call (50/min per tenant) `auto` uses the bulk export,
 * counted as the poller counts them (`chooseVulnerabilityMode`). Not the poller's threshold, which follows the
 * tenant's interval and quota (`planVulnerabilityMode`).
 */
export const AUTO_BULK_THRESHOLD = 250;
/**
 * Longest wait of `check` for the tenant's quota, or out a 429, in milliseconds (the registrar's access test's
 * default time limit). Sharing the pipeline's quota, a tenant the pollers left held back (a 429's Retry-After,
 * an hourly quota spent) would otherwise keep the check silent up to an hour; it is told at once whose calls
 * are held back, and for how long.
 */
const CHECK_MAX_QUOTA_WAIT_MS = 30_000;
/** Longest wait for the export snapshot's `generatedTime`, in milliseconds (the vuln-fetcher's default). */
const EXPORT_GENERATION_WAIT_MS = 30_000;
/** Per-device vulnerability requests started at once by the CLI (the limiter caps calls in flight anyway). */
const VULNERABILITY_WORKERS = 10;

type Mode = 'per-device' | 'bulk' | 'auto';

interface Options {
  action: 'devices' | 'check';
  tenant: { azureTenantId: string; clientId: string; clientSecret: string; cloud?: string; region?: string };
  pageSize: number | undefined;
  withVulnerabilities: boolean;
  mode: Mode;
  /** `--include-flagged` was given: it changes nothing now, and is said so. */
  includeFlagged: boolean;
  useRedis: boolean;
}

class UsageError extends Error {}

async function readOptions(args: string[]): Promise<Options | 'help'> {
  const [action, ...rest] = args;
  if (!action || action === '--help' || action === '-h') return 'help';
  // Arguments are never echoed: a secret pasted in the wrong place would land on stderr (and in logs). They are
  // named by their position among `urs defender`'s arguments instead.
  if (action !== 'devices' && action !== 'check')
    throw new UsageError('unknown action (argument 1, not shown): it must be devices or check');
  const options = {
    'azure-tenant-id': { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret-file': { type: 'string' },
    cloud: { type: 'string' },
    region: { type: 'string' },
    'page-size': { type: 'string' },
    'with-vulnerabilities': { type: 'boolean' },
    'vulnerabilities-mode': { type: 'string' },
    // Accepted as before: excluded devices are written anyway, merged ones never (as the pipeline has them).
    'include-flagged': { type: 'boolean' },
    'no-redis': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  } as const;
  let values;
  try {
    ({ values } = parseArgs({ args: rest, strict: true, allowPositionals: false, options }));
  } catch (error) {
    throw new UsageError(argumentsError(error, rest, options, 2));
  }
  if (values.help) return 'help';
  for (const name of ['azure-tenant-id', 'client-id', 'client-secret-file'] as const) {
    if (!values[name]) throw new UsageError(`--${name} is required`);
  }
  let clientSecret: string;
  try {
    clientSecret = (await readFile(values['client-secret-file'] as string, 'utf8')).trim();
  } catch (error) {
    // The path is not shown: it may be the secret itself, given where its file belongs.
    throw new UsageError(
      `--client-secret-file: cannot read the file given (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  if (!clientSecret) throw new UsageError('--client-secret-file: the file is empty');
  let pageSize: number | undefined;
  if (values['page-size'] !== undefined) {
    pageSize = Number(values['page-size']);
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 10_000)
      throw new UsageError('--page-size must be a whole number from 1 to 10000');
  }
  if (values.cloud !== undefined && !(DEFENDER_CLOUDS as readonly string[]).includes(values.cloud))
    throw new UsageError(`--cloud must be one of ${DEFENDER_CLOUDS.join(', ')}`);
  if (values.region !== undefined && !(DEFENDER_REGIONS as readonly string[]).includes(values.region))
    throw new UsageError(`--region must be one of ${DEFENDER_REGIONS.join(', ')}`);
  const mode = (values['vulnerabilities-mode'] ?? 'auto') as Mode;
  if (!['per-device', 'bulk', 'auto'].includes(mode))
    throw new UsageError('--vulnerabilities-mode must be per-device, bulk or auto');
  return {
    action,
    tenant: {
      azureTenantId: values['azure-tenant-id'] as string,
      clientId: values['client-id'] as string,
      clientSecret,
      ...(values.cloud ? { cloud: values.cloud } : {}),
      ...(values.region ? { region: values.region } : {}),
    },
    pageSize,
    withVulnerabilities: Boolean(values['with-vulnerabilities']),
    mode,
    includeFlagged: Boolean(values['include-flagged']),
    useRedis: !values['no-redis'],
  };
}

/** Writes honouring back-pressure, so a slow `urs score` downstream never makes us buffer the fleet. */
function writer(stream: NodeJS.WritableStream): (line: string) => Promise<void> {
  return (line) =>
    new Promise((resolve, reject) => {
      const ok = stream.write(`${line}\n`, (error) => (error ? reject(error) : undefined));
      if (ok) resolve();
      else stream.once('drain', resolve);
    });
}

async function mapLimited<T, R>(items: T[], workers: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const run = async (): Promise<void> => {
    while (next < items.length) {
      const at = next++;
      results[at] = await task(items[at] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(workers, items.length) }, run));
  return results;
}

interface Counts {
  written: number;
  merged: number;
  invalid: number;
  vulnerabilitiesMissing: number;
}

/** Why a device has no vulnerabilities, by its code only (the error's text goes to stderr). */
type Missing = { code: string };

/**
 * Writes the devices the pipeline scores, as its poller lists them: every device but one merged into another,
 * with, asked for, its vulnerabilities as the vuln-fetcher has them (see USAGE).
 */
async function devices(
  client: DefenderClient,
  options: Options,
  io: CommandIo,
  note: (line: string) => void,
): Promise<Counts> {
  const write = writer(io.stdout);
  const counts: Counts = { written: 0, merged: 0, invalid: 0, vulnerabilitiesMissing: 0 };
  const pages = client.listMachinePages(options.pageSize ? { pageSize: options.pageSize } : {});
  let bulk: { devices: Map<string, Vulnerability[] | null>; snapshot: ExportSnapshot } | undefined;
  let perDeviceStopped: DefenderError | undefined;

  const vulnerabilitiesOf = async (machine: Machine): Promise<Vulnerability[] | Missing> => {
    const record = toDeviceRecord(listedMachine(machine.record));
    if (bulk) {
      const exported = fromExportSnapshot(record, bulk.devices.get(record.id), bulk.snapshot, () => []);
      return exported.code === undefined ? exported.vulnerabilities : { code: exported.code };
    }
    // No call for a device Microsoft holds no vulnerabilities of, as the vuln-fetcher makes none.
    const notHeld = vulnerabilitiesNotHeld(record);
    if (notHeld !== null) return { code: notHeld };
    if (perDeviceStopped) return { code: perDeviceStopped.code };
    try {
      return await client.getMachineVulnerabilities(machine.record.id);
    } catch (error) {
      if (!(error instanceof DefenderError)) throw error;
      if (
        error.code === DefenderErrorCode.CONSENT_MISSING ||
        error.code === DefenderErrorCode.ACCESS_REFUSED ||
        error.code === DefenderErrorCode.FEATURE_DISABLED ||
        error.code === DefenderErrorCode.OPERATION_DISALLOWED ||
        error.code === DefenderErrorCode.UNAUTHORIZED
      ) {
        // The same answer would come for every device: say it once and stop asking.
        if (!perDeviceStopped) note(`vulnerabilities unavailable for every device: ${error.message}`);
        perDeviceStopped = error;
      } else {
        note(`vulnerabilities of ${machine.record.id} unavailable: ${error.message}`);
      }
      return { code: error.code };
    }
  };

  const readExport = async (): Promise<void> => {
    note('reading vulnerabilities from the bulk export (SoftwareVulnerabilitiesByMachine)');
    try {
      const generatedTime = await exportGeneratedTime(client, note);
      const devices = (await client.getVulnerabilitiesByMachine()).devices;
      bulk = { devices, snapshot: { generatedTime, collectedAt: new Date() } };
    } catch (error) {
      if (!(error instanceof DefenderError)) throw error;
      note(`bulk export unavailable, vulnerabilities will be null: ${error.message}`);
      perDeviceStopped = error;
    }
  };

  const writePage = async (page: MachinePage): Promise<void> => {
    counts.invalid += page.invalid;
    // A merged record's surviving device is listed too: the pipeline scores that one alone.
    const selected = page.machines.filter((m) => !m.flags.merged);
    counts.merged += page.machines.length - selected.length;
    const vulnerabilities = options.withVulnerabilities
      ? await mapLimited(selected, VULNERABILITY_WORKERS, vulnerabilitiesOf)
      : [];
    for (let i = 0; i < selected.length; i++) {
      const record = (selected[i] as Machine).record;
      if (options.withVulnerabilities) {
        const list = vulnerabilities[i] as Vulnerability[] | Missing;
        if (Array.isArray(list)) {
          await write(JSON.stringify({ ...record, vulnerabilities: list }));
        } else {
          // Why they are missing, by its code only (the error's text went to stderr): urs score reads it.
          counts.vulnerabilitiesMissing++;
          await write(JSON.stringify({ ...record, vulnerabilities: null, fetchError: { code: list.code } }));
        }
      } else {
        await write(JSON.stringify(record));
      }
      counts.written++;
    }
    note(`page ${page.index + 1}: ${selected.length} devices written (${counts.written} so far)`);
  };

  if (!options.withVulnerabilities || options.mode !== 'auto') {
    if (options.withVulnerabilities && options.mode === 'bulk') await readExport();
    for await (const page of pages) await writePage(page);
    return counts;
  }
  // auto: pages are held back until the mode is chosen, as the poller holds its devices back, and no
  // per-device call is spent before.
  const choice = chooseVulnerabilityMode(AUTO_BULK_THRESHOLD);
  const held: MachinePage[] = [];
  const writeHeld = async (): Promise<void> => {
    if (choice.end() === 'bulk') await readExport();
    for (const page of held.splice(0)) await writePage(page);
  };
  for await (const page of pages) {
    if (choice.mode !== undefined) {
      await writePage(page);
      continue;
    }
    held.push(page);
    for (const machine of page.machines)
      if (!machine.flags.merged) choice.count(listedMachine(machine.record));
    if (choice.mode !== undefined) await writeHeld();
  }
  if (choice.mode === undefined) await writeHeld();
  return counts;
}

/**
 * The `generatedTime` of the export snapshot Microsoft serves, asked before the export is read as the
 * vuln-fetcher asks it (which devices the snapshot cannot list yet depends on it); undefined when it cannot be
 * told within EXPORT_GENERATION_WAIT_MS: the snapshot is then taken for the oldest it can be.
 */
async function exportGeneratedTime(
  client: DefenderClient,
  note: (line: string) => void,
): Promise<string | undefined> {
  try {
    return (await client.getExportGeneration(AbortSignal.timeout(EXPORT_GENERATION_WAIT_MS))).generatedTime;
  } catch (error) {
    note(`export snapshot unknown, taken for one up to 7 hours old: ${errorMessage(error)}`);
    return undefined;
  }
}

/** `urs defender`: see USAGE. */
export const defenderCommand: Command = async (args, io) => {
  let options: Options | 'help';
  try {
    options = await readOptions(args);
  } catch (error) {
    io.stderr.write(
      `urs defender: ${errorMessage(error)}\n${error instanceof UsageError ? `${USAGE}\n` : ''}`,
    );
    return 2;
  }
  if (options === 'help') {
    io.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const note = (line: string): void => {
    io.stderr.write(`urs defender: ${line}\n`);
  };
  let backend: Backend;
  try {
    backend = await openBackend(io.env, options.useRedis, note);
  } catch (error) {
    note(errorMessage(error));
    return 2;
  }
  // Library warnings (retries, skipped records) go to stderr as JSON lines; the secret is never in them.
  const logger = createLogger({ service: 'urs-cli', level: 'warn', stream: io.stderr });
  let client: DefenderClient | undefined;
  // Vulnerability rows skipped as unreadable (each also logged), counted as the pipeline counts them.
  let vulnerabilityRowsSkipped = 0;
  try {
    client = createDefenderClient(options.tenant, {
      limiter: backend.limiter,
      quota: backend.quota,
      logger,
      onInvalidRecord: (record) => {
        if (record.kind !== 'machine') vulnerabilityRowsSkipped++;
      },
      overrides: backend.overrides,
      httpsAgent: backend.httpsAgent,
      ...(options.action === 'check'
        ? { maxQuotaWaitMs: CHECK_MAX_QUOTA_WAIT_MS, maxThrottleWaitMs: CHECK_MAX_QUOTA_WAIT_MS }
        : {}),
    });
    if (options.action === 'check') {
      const report = await client.checkAccess();
      io.stdout.write(`${report.verdict}\n`);
      return report.ok ? 0 : 1;
    }
    if (options.includeFlagged)
      note(
        '--include-flagged is no longer needed: excluded devices are written as the pipeline scores them, ' +
          'and merged ones never (their surviving device is written)',
      );
    const counts = await devices(client, options, io, note);
    note(
      `done: ${counts.written} devices written, ${counts.merged} merged skipped, ${counts.invalid} invalid records skipped` +
        (options.withVulnerabilities
          ? `, ${counts.vulnerabilitiesMissing} without vulnerabilities, ${vulnerabilityRowsSkipped} unreadable vulnerability rows skipped`
          : ''),
    );
    return 0;
  } catch (error) {
    note(error instanceof DefenderError ? `${error.message} [${error.code}]` : errorMessage(error));
    return 1;
  } finally {
    client?.close();
    await backend.close();
  }
};

import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import {
  DEFENDER_CLOUDS,
  DEFENDER_REGIONS,
  DefenderError,
  DefenderErrorCode,
  type DefenderClient,
  type Machine,
  type Vulnerability,
  createDefenderClient,
  isScorable,
} from '@urs/defender';
import { createLogger } from '@urs/logging';
import { errorMessage } from '@urs/resilience';
import type { Command, CommandIo } from '../command';
import { type Backend, openBackend } from './defender/backend';

const USAGE = `usage: urs defender devices --azure-tenant-id T --client-id C --client-secret-file F [options]
       urs defender check   --azure-tenant-id T --client-id C --client-secret-file F [--cloud X] [--region R]

devices   writes the tenant's devices as NDJSON machine records on stdout (pipe into 'urs score');
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
  --with-vulnerabilities     add "vulnerabilities" to each record: an array, or null where they could not be
                             fetched, then with "fetchError": {"code"} saying why (urs score reads it)
  --vulnerabilities-mode M   per-device, bulk or auto (default): auto takes the bulk export when the tenant
                             has more than 250 devices (per-device calls, 50/min, would take over 5 minutes)
  --include-flagged          also write devices merged into another one or excluded (skipped by default)
  --no-redis                 do not share the pipeline's limiter and quota through Redis

Environment: URS_DEFENDER_AUTHORITY_HOST, URS_DEFENDER_API_BASE (e.g. the simulator; trust its CA with
NODE_EXTRA_CA_CERTS or URS_DEFENDER_CA_FILE), URS_DEFENDER_SCOPE (government clouds only; or
URS_DEFENDER_SCOPE_GCC, URS_DEFENDER_SCOPE_GCC_HIGH, URS_DEFENDER_SCOPE_DOD as the services read them),
REDIS_URL, URS_REDIS_PREFIX, URS_DEFENDER_MAX_IN_FLIGHT (set it as the services have it: a run sharing
their limiter writes it there, default 10).
Exit status: 0 done; 1 the tenant could not be read (the error says what to fix); 2 bad usage.`;

/** Above this many devices `auto` uses the bulk export (per-device calls: 50/min per tenant). */
const AUTO_BULK_THRESHOLD = 250;
/**
 * Longest wait of `check` for the tenant's quota, or out a 429, in milliseconds (the registrar's access test's
 * default time limit). Sharing the pipeline's quota, a tenant the pollers left held back (a 429's Retry-After,
 * an hourly quota spent) would otherwise keep the check silent up to an hour; it is told at once whose calls
 * are held back, and for how long.
 */
const CHECK_MAX_QUOTA_WAIT_MS = 30_000;
/** Per-device vulnerability requests started at once by the CLI (the limiter caps calls in flight anyway). */
const VULNERABILITY_WORKERS = 10;

type Mode = 'per-device' | 'bulk' | 'auto';

interface Options {
  action: 'devices' | 'check';
  tenant: { azureTenantId: string; clientId: string; clientSecret: string; cloud?: string; region?: string };
  pageSize: number | undefined;
  withVulnerabilities: boolean;
  mode: Mode;
  includeFlagged: boolean;
  useRedis: boolean;
}

class UsageError extends Error {}

async function readOptions(args: string[]): Promise<Options | 'help'> {
  const [action, ...rest] = args;
  if (!action || action === '--help' || action === '-h') return 'help';
  if (action !== 'devices' && action !== 'check') throw new UsageError(`unknown action '${action}'`);
  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: false,
      options: {
        'azure-tenant-id': { type: 'string' },
        'client-id': { type: 'string' },
        'client-secret-file': { type: 'string' },
        cloud: { type: 'string' },
        region: { type: 'string' },
        'page-size': { type: 'string' },
        'with-vulnerabilities': { type: 'boolean' },
        'vulnerabilities-mode': { type: 'string' },
        'include-flagged': { type: 'boolean' },
        'no-redis': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError(errorMessage(error));
  }
  if (values.help) return 'help';
  for (const name of ['azure-tenant-id', 'client-id', 'client-secret-file'] as const) {
    if (!values[name]) throw new UsageError(`--${name} is required`);
  }
  let clientSecret: string;
  try {
    clientSecret = (await readFile(values['client-secret-file'] as string, 'utf8')).trim();
  } catch (error) {
    throw new UsageError(
      `--client-secret-file: cannot read ${values['client-secret-file']}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`,
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

/**
 * auto: one request of AUTO_BULK_THRESHOLD + 1 devices tells whether the fleet is larger than the
 * threshold, before any per-device call is spent.
 */
async function useBulk(client: DefenderClient, mode: Mode): Promise<boolean> {
  if (mode !== 'auto') return mode === 'bulk';
  const probe = client.listMachinePages({ pageSize: AUTO_BULK_THRESHOLD + 1, confirmShortPage: false });
  const first = await probe.next();
  await probe.return(undefined);
  return !first.done && first.value.received > AUTO_BULK_THRESHOLD;
}

interface Counts {
  written: number;
  flagged: number;
  invalid: number;
  vulnerabilitiesMissing: number;
}

async function devices(
  client: DefenderClient,
  options: Options,
  io: CommandIo,
  note: (line: string) => void,
): Promise<Counts> {
  const write = writer(io.stdout);
  const counts: Counts = { written: 0, flagged: 0, invalid: 0, vulnerabilitiesMissing: 0 };
  const pages = client.listMachinePages(options.pageSize ? { pageSize: options.pageSize } : {});
  let bulk: Map<string, Vulnerability[] | null> | undefined;
  let perDeviceStopped: DefenderError | undefined;

  const vulnerabilitiesOf = async (machine: Machine): Promise<Vulnerability[] | { code: string }> => {
    // null: the export listed the device in rows none of which could be read (its CVEs unknown, not none).
    if (bulk) {
      const listed = bulk.get(machine.record.id);
      return listed === undefined ? [] : (listed ?? { code: DefenderErrorCode.UNREADABLE_RECORDS });
    }
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

  if (options.withVulnerabilities && (await useBulk(client, options.mode))) {
    note('reading vulnerabilities from the bulk export (SoftwareVulnerabilitiesByMachine)');
    try {
      bulk = (await client.getVulnerabilitiesByMachine()).devices;
    } catch (error) {
      if (!(error instanceof DefenderError)) throw error;
      note(`bulk export unavailable, vulnerabilities will be null: ${error.message}`);
      perDeviceStopped = error;
    }
  }
  for await (const page of pages) {
    counts.invalid += page.invalid;
    const selected = page.machines.filter((m) => options.includeFlagged || isScorable(m));
    counts.flagged += page.machines.length - selected.length;
    const vulnerabilities = options.withVulnerabilities
      ? await mapLimited(selected, VULNERABILITY_WORKERS, vulnerabilitiesOf)
      : [];
    for (let i = 0; i < selected.length; i++) {
      const record = (selected[i] as Machine).record;
      if (options.withVulnerabilities) {
        const list = vulnerabilities[i] as Vulnerability[] | { code: string };
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
  }
  return counts;
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
    const counts = await devices(client, options, io, note);
    note(
      `done: ${counts.written} devices written, ${counts.flagged} merged/excluded skipped, ${counts.invalid} invalid records skipped` +
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

import type { Simulator } from './api';
import { startSimulator } from './server';
import type { TenantSpec } from './state';

// `npm run sim`: the simulator as its own process. Options come from flags, or from the matching
// environment variables:
//   --port N            URS_SIM_PORT            default 8443 (0 = ephemeral)
//   --host H            URS_SIM_HOST            default 127.0.0.1
//   --public-url U      URS_SIM_PUBLIC_URL      what clients call it by, when not https://<host>:<port>
//                                               (https://sim:8443 in a container network); default none
//   --ca-dir D          URS_SIM_CA_DIR          default .sim (ca.pem is written there)
//   --ca-key-dir D      URS_SIM_CA_KEY_DIR      default the --ca-dir (ca-key.pem is written there)
//   --seed N            URS_SIM_SEED            default 1
//   --token-lifetime S  URS_SIM_TOKEN_LIFETIME  seconds, default 3599
//   --latency M[:J]     URS_SIM_LATENCY         mean and jitter in ms, default 0
//   --quotas on|off     URS_SIM_QUOTAS          default on
//   --tenant T:C:S:N    URS_SIM_TENANTS (comma-separated)  tenant id, client id, secret, device count; repeatable
// When ready it prints one JSON line `{"baseUrl":…,"caFile":…,"controlUrl":…}` on stdout.

interface CliOptions {
  port: number;
  host: string;
  publicUrl: string | undefined;
  caDir: string;
  caKeyDir: string;
  seed: number;
  tokenLifetimeSec: number;
  latency: { meanMs: number; jitterMs: number };
  quotas: boolean;
  tenants: TenantSpec[];
}

/** Bad command line or environment; main() prints it and exits 2. */
export class CliError extends Error {}

function fail(message: string): never {
  throw new CliError(message);
}

function integer(value: string, name: string, min: number): number {
  if (!/^\d+$/.test(value) || Number(value) < min)
    fail(`${name} must be an integer >= ${min}, got '${value}'`);
  return Number(value);
}

function tenantSpec(text: string): TenantSpec {
  const parts = text.split(':');
  // The value holds a secret, so the message names only the shape that was wrong.
  if (parts.length !== 4)
    fail(
      `--tenant must be <azureTenantId>:<clientId>:<secret>:<size> (4 fields separated by ':'), got ${parts.length} fields`,
    );
  const [azureTenantId, clientId, clientSecret, size] = parts as [string, string, string, string];
  return {
    azureTenantId,
    apps: [{ clientId, clientSecret }],
    fleet: { size: integer(size, '--tenant size', 0) },
  };
}

export function parseArgs(argv: readonly string[], env: NodeJS.ProcessEnv): CliOptions {
  const flags = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith('--')) fail(`unexpected argument '${arg}'`);
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) fail(`--${name} needs a value`);
    flags.set(name, [...(flags.get(name) ?? []), value]);
  }
  const known = new Set([
    'port',
    'host',
    'public-url',
    'ca-dir',
    'ca-key-dir',
    'seed',
    'token-lifetime',
    'latency',
    'quotas',
    'tenant',
  ]);
  for (const name of flags.keys()) if (!known.has(name)) fail(`unknown option --${name}`);
  const one = (flag: string, envName: string): string | undefined => flags.get(flag)?.at(-1) ?? env[envName];
  const latencyText = one('latency', 'URS_SIM_LATENCY') ?? '0';
  const [mean = '0', jitter = '0'] = latencyText.split(':');
  const quotasText = (one('quotas', 'URS_SIM_QUOTAS') ?? 'on').toLowerCase();
  if (!['on', 'off', 'true', 'false'].includes(quotasText))
    fail(`--quotas must be on or off, got '${quotasText}'`);
  const tenantTexts = [
    ...(env.URS_SIM_TENANTS ? env.URS_SIM_TENANTS.split(',').filter((t) => t) : []),
    ...(flags.get('tenant') ?? []),
  ];
  const caDir = one('ca-dir', 'URS_SIM_CA_DIR') ?? '.sim';
  return {
    port: integer(one('port', 'URS_SIM_PORT') ?? '8443', '--port', 0),
    host: one('host', 'URS_SIM_HOST') ?? '127.0.0.1',
    publicUrl: one('public-url', 'URS_SIM_PUBLIC_URL'),
    caDir,
    caKeyDir: one('ca-key-dir', 'URS_SIM_CA_KEY_DIR') ?? caDir,
    seed: integer(one('seed', 'URS_SIM_SEED') ?? '1', '--seed', 0),
    tokenLifetimeSec: integer(
      one('token-lifetime', 'URS_SIM_TOKEN_LIFETIME') ?? '3599',
      '--token-lifetime',
      1,
    ),
    latency: { meanMs: integer(mean, '--latency mean', 0), jitterMs: integer(jitter, '--latency jitter', 0) },
    quotas: quotasText === 'on' || quotasText === 'true',
    tenants: tenantTexts.map(tenantSpec),
  };
}

async function main(): Promise<void> {
  let sim: Simulator;
  try {
    const options = parseArgs(process.argv.slice(2), process.env);
    sim = await startSimulator({
      port: options.port,
      host: options.host,
      ...(options.publicUrl === undefined ? {} : { publicUrl: options.publicUrl }),
      caDir: options.caDir,
      caKeyDir: options.caKeyDir,
      seed: options.seed,
      tokenLifetimeSec: options.tokenLifetimeSec,
      latency: options.latency,
      quotas: options.quotas,
    });
    for (const tenant of options.tenants) sim.addTenant(tenant);
  } catch (err) {
    process.stderr.write(`urs simulator: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  }
  process.stdout.write(
    `${JSON.stringify({ baseUrl: sim.baseUrl, caFile: sim.caFile, controlUrl: `${sim.baseUrl}/_sim/` })}\n`,
  );
  const stop = (): void => {
    sim.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (require.main === module) void main();

import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { OutboundMessage, Publisher } from '@urs/bus';
import type { DeviceBatch, ScoredDevice } from '@urs/contracts';
import { createHttpsAgent, createLocalLimiter, createLocalQuotaGate } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { DEFAULT_PROFILE, compileProfile, scoreDevice } from '@urs/scoring';
import { type Simulator, startSimulator } from '@urs/simulator';
import type { CycleStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { sealedTenantRecord } from '@urs/testkit';
import { createBatchFit } from '../../../../services/poller/src/batch-fit';
import { runCycle } from '../../../../services/poller/src/cycle';
import { sealer } from '../../../../services/poller/test/support/cycle';
import { simGateway } from '../../../../services/poller/test/support/sim-gateway';
import { toScoredDevice } from '../../../../services/scorer/src/scored-device';
import { createDefenderSources } from '../../../../services/vuln-fetcher/src/sources';
import { message, setup } from '../../../../services/vuln-fetcher/test/handler-support';
import { AUTO_BULK_THRESHOLD, defenderCommand } from '../../src/commands/defender';
import { scoreCommand } from '../../src/commands/score';
import { runCommand } from '../support/run';

// The dry run README gives (`urs defender devices --with-vulnerabilities | urs score`) against the pipeline's
// own steps over the same simulated tenant: the poller's cycle, the vuln-fetcher's enrichment and the scorer's
// scoring. Each device must get the same score, band, missing signals and reasons both ways.

/** The tenant id the vuln-fetcher's test handler knows (`handler-support`). */
const TENANT_ID = 't1';
const ASSUME_WORST = { ...DEFAULT_PROFILE, missingSignals: 'assume-worst' as const };

let sim: Simulator;
let dir: string;
type App = { azureTenantId: string; clientId: string; clientSecret: string };
const newApp = (): App => ({
  azureTenantId: randomUUID(),
  clientId: randomUUID(),
  clientSecret: `Qx9~${randomUUID().replace(/-/g, '')}`,
});
const app = newApp();
/**
 * Tenants with more devices than `auto`'s threshold. `large`: all but CALLED_FOR of them excluded from
 * vulnerability management, the few left costing a call each, well within the threshold (counting the excluded
 * ones, they do not fit). `busy`: CALLED_FOR of them excluded, more than the threshold left.
 */
const large = newApp();
const busy = newApp();
/** Devices of `large` not excluded, of `busy` excluded (few: a local quota lets 50 per-device calls a minute). */
const CALLED_FOR = 5;

/** What both ways give each device, by its id. */
type Outcome = Pick<ScoredDevice, 'score' | 'band' | 'missing' | 'missingReasons' | 'contributions'>;

const outcome = (scored: Outcome): Outcome => ({
  score: scored.score,
  band: scored.band,
  missing: scored.missing,
  missingReasons: scored.missingReasons,
  contributions: scored.contributions,
});

function lines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

beforeAll(async () => {
  sim = await startSimulator({ quotas: false });
  dir = mkdtempSync(join(tmpdir(), 'urs-cli-parity-'));
  sim.addTenant({ azureTenantId: app.azureTenantId, apps: [app], fleet: { size: 40, seed: 33 } });
  const machines = sim.machines(app.azureTenantId).filter((m) => !m.mergedIntoMachineId);
  const [excluded, young, odd, unreadable, clean, merged, numeric, flag] = machines.map(
    (m) => m.id,
  ) as string[];
  if (!excluded || !young || !odd || !unreadable || !clean || !merged || !numeric || !flag)
    throw new Error('the fleet is too small');
  sim.updateMachine(app.azureTenantId, merged, { mergedIntoMachineId: clean });
  sim.updateMachine(app.azureTenantId, excluded, { isExcluded: true });
  // First seen an hour ago, no vulnerability yet: the export's snapshot cannot list it.
  sim.updateMachine(app.azureTenantId, young, {
    firstSeen: new Date(Date.now() - 3_600_000).toISOString(),
    isExcluded: false,
  });
  sim.setVulnerabilities(app.azureTenantId, young, []);
  // A lastSeen in a shape the model reads and Date.parse does not.
  sim.updateMachine(app.azureTenantId, odd, {
    lastSeen: new Date(Date.now() - 2 * 86_400_000).toISOString().replace('Z', '+00'),
    isExcluded: false,
  });
  const row = sim
    .machines(app.azureTenantId)
    .flatMap((m) => sim.vulnerabilities(app.azureTenantId, m.id))
    .find(() => true);
  if (!row) throw new Error('the fleet has no vulnerability to copy');
  for (const id of [unreadable, clean]) sim.updateMachine(app.azureTenantId, id, { isExcluded: false });
  sim.setVulnerabilities(app.azureTenantId, unreadable, [{ ...row, id: 'CVE-2024-9', cvssV3: 11 }]);
  sim.setVulnerabilities(app.azureTenantId, clean, []);
  // An onboardingStatus that is not a string: a number, a boolean.
  for (const [id, status] of [
    [numeric, 1],
    [flag, true],
  ] as const)
    sim.updateMachine(app.azureTenantId, id, {
      onboardingStatus: status as unknown as string,
      isExcluded: false,
    });
  sim.generateExport(app.azureTenantId);

  for (const [tenant, seed] of [
    [large, 34],
    [busy, 35],
  ] as const) {
    sim.addTenant({
      azureTenantId: tenant.azureTenantId,
      apps: [tenant],
      fleet: { size: AUTO_BULK_THRESHOLD + 60, seed },
    });
    const listed = sim.machines(tenant.azureTenantId).filter((m) => !m.mergedIntoMachineId);
    if (listed.length <= AUTO_BULK_THRESHOLD + CALLED_FOR) throw new Error('the fleet is too small');
    listed.forEach((m, index) =>
      sim.updateMachine(tenant.azureTenantId, m.id, {
        isExcluded: tenant === large ? index < listed.length - CALLED_FOR : index < CALLED_FOR,
      }),
    );
    // One device the export's snapshot cannot list yet: its score tells the bulk export from per-device calls.
    const newest = listed.at(-1) as (typeof listed)[number];
    sim.updateMachine(tenant.azureTenantId, newest.id, {
      firstSeen: new Date(Date.now() - 3_600_000).toISOString(),
    });
    sim.setVulnerabilities(tenant.azureTenantId, newest.id, []);
    sim.generateExport(tenant.azureTenantId);
  }
});

afterAll(async () => {
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
});

/** `urs defender devices --with-vulnerabilities | urs score --profile … --now …`, by device. */
async function throughCli(
  mode: 'per-device' | 'bulk' | 'auto',
  profile: object,
  now: string,
  tenant: App = app,
): Promise<{ scores: Map<string, Outcome>; bulk: boolean }> {
  const secret = join(dir, `${randomUUID()}.secret`);
  writeFileSync(secret, tenant.clientSecret);
  const profileFile = join(dir, `${randomUUID()}.json`);
  writeFileSync(profileFile, JSON.stringify(profile));
  const env = {
    URS_DEFENDER_AUTHORITY_HOST: sim.baseUrl,
    URS_DEFENDER_API_BASE: sim.baseUrl,
    URS_DEFENDER_CA_FILE: sim.caFile,
  };
  const devices = await runCommand(
    defenderCommand,
    [
      'devices',
      ...['--azure-tenant-id', tenant.azureTenantId, '--client-id', tenant.clientId],
      ...['--client-secret-file', secret, '--with-vulnerabilities', '--vulnerabilities-mode', mode],
      '--no-redis',
    ],
    { env },
  );
  expect(devices.code).toBe(0);
  const scored = await runCommand(scoreCommand, ['--profile', profileFile, '--now', now], {
    stdin: Readable.from([devices.stdout]),
  });
  expect(scored.stderr).toBe('');
  return {
    scores: new Map(
      lines(scored.stdout).map((line) => [line.deviceId as string, outcome(line as unknown as Outcome)]),
    ),
    bulk: devices.stderr.includes('reading vulnerabilities from the bulk export'),
  };
}

/**
 * The poller's cycle, the vuln-fetcher's enrichment and the scorer's scoring, by device; the cycle's start and
 * its vulnerability mode. `auto`: the cycle chooses, its per-device capacity `urs defender`'s threshold.
 */
async function throughPipeline(
  mode: 'per-device' | 'bulk' | 'auto',
  profile: object,
  tenant: App = app,
): Promise<{ scores: Map<string, Outcome>; now: string; bulk: boolean }> {
  const agent = createHttpsAgent({ extraCa: sim.caPem });
  const limiter = createLocalLimiter();
  const overrides = { authorityHost: sim.baseUrl, apiBase: sim.baseUrl };
  const gateway = simGateway(sim, agent, limiter);
  const fetcherLimiter = createLocalLimiter();
  const sources = createDefenderSources({
    sealer,
    limiter: fetcherLimiter,
    quota: createLocalQuotaGate(),
    httpsAgent: agent,
    overrides,
    logger: silentLogger,
    metrics: new Registry({ processMetrics: false }),
  });
  const record = sealedTenantRecord(TENANT_ID, tenant, sealer, {
    source: 'rest',
    updatedAt: '2026-01-01T00:00:00.000Z',
    pollIntervalMinutes: 10,
    riskProfile: profile as Record<string, unknown>,
  });
  try {
    const batches: DeviceBatch[] = [];
    const publisher = {
      async send(_topic: string, _contract: string, messages: OutboundMessage<DeviceBatch>[]) {
        for (const m of messages) batches.push(m.value as DeviceBatch);
      },
    } as unknown as Publisher;
    const cycles = {
      begin: async () => undefined,
      mergedDevices: async () => undefined,
      listingPending: async () => true,
      listed: async () => undefined,
    } as unknown as CycleStore;
    const startedAt = Date.now();
    await runCycle(
      {
        // The mode asked for: every device fits the interval's per-device calls, or none does; or, in auto, as
        // many as `urs defender`'s threshold.
        defender: {
          ...gateway,
          planMode: () => ({
            mode: 'per-device',
            perDeviceCapacity:
              mode === 'auto' ? AUTO_BULK_THRESHOLD : mode === 'bulk' ? 0 : Number.MAX_SAFE_INTEGER,
          }),
        },
        sealer,
        publisher,
        cycles,
        deviceBatchesTopic: 'urs.device-batches',
        batchSize: 500,
        batchFit: createBatchFit(),
        maxCycleMs: 3_600_000,
        logger: silentLogger,
      },
      {
        record,
        cycleId: `${TENANT_ID}-${startedAt}`,
        startedAt,
        intervalMs: 600_000,
        lease: { tenantId: TENANT_ID, token: '1:poller' },
        signal: new AbortController().signal,
        leaseHeld: () => true,
      },
    );
    const cycleMode = batches[0]?.vulnerabilityMode;
    expect(batches.map((batch) => batch.vulnerabilityMode)).toEqual(batches.map(() => cycleMode));
    if (mode !== 'auto') expect(cycleMode).toBe(mode);
    const enrich = setup(sources.forTenant(record));
    for (const batch of batches) await enrich.handler(message(batch));
    const compiled = compileProfile(profile);
    const scores = new Map<string, Outcome>();
    for (const batch of enrich.sent) {
      // As the scorer's handler scores an enriched batch: the count at the cycle's start.
      const cycleStartMs = Date.parse(batch.cycleStartedAt);
      for (const device of batch.devices) {
        const vulnerabilities =
          device.vulnerabilities === null
            ? null
            : { criticalCveCount: device.vulnerabilities.criticalCveCount, fetchedAt: batch.collectedAt };
        const scored = toScoredDevice(
          device,
          scoreDevice(device.machine, vulnerabilities, compiled, cycleStartMs),
        );
        scores.set(scored.deviceId, outcome(scored));
      }
    }
    return { scores, now: new Date(startedAt).toISOString(), bulk: cycleMode === 'bulk' };
  } finally {
    sources.close();
    gateway.close();
    await limiter.close();
    await fetcherLimiter.close();
    agent.destroy();
  }
}

describe('urs defender devices | urs score against the pipeline', () => {
  it.each([
    ['per-device', 'ignore', DEFAULT_PROFILE],
    ['bulk', 'ignore', DEFAULT_PROFILE],
    ['per-device', 'assume-worst', ASSUME_WORST],
    ['bulk', 'assume-worst', ASSUME_WORST],
  ] as const)(
    'should give every device the score the pipeline gives it (%s, missing signals %s)',
    async (mode, _missing, profile) => {
      const pipeline = await throughPipeline(mode, profile);
      const cli = await throughCli(mode, profile, pipeline.now);
      expect(pipeline.scores.size).toBe(
        sim.machines(app.azureTenantId).filter((m) => !m.mergedIntoMachineId).length,
      );
      // The kinds of device that went different ways went through: excluded, unreadable, not in the export's
      // snapshot (bulk).
      const reasons = new Set([...pipeline.scores.values()].map((s) => s.missingReasons?.criticalCves));
      expect(reasons).toContain('EXCLUDED');
      expect(reasons).toContain('DEFENDER_UNREADABLE_RECORDS');
      if (mode === 'bulk') expect(reasons).toContain('NOT_IN_EXPORT_SNAPSHOT');
      expect(cli.bulk).toBe(mode === 'bulk');
      expect(Object.fromEntries([...cli.scores].sort())).toEqual(
        Object.fromEntries([...pipeline.scores].sort()),
      );
    },
  );

  it.each([
    ['per-device', large],
    ['bulk', busy],
  ] as const)(
    'should choose the vulnerability mode in auto as the pipeline does, not counting excluded devices (%s)',
    async (mode, tenant) => {
      const pipeline = await throughPipeline('auto', DEFAULT_PROFILE, tenant);
      const cli = await throughCli('auto', DEFAULT_PROFILE, pipeline.now, tenant);
      expect(pipeline.bulk).toBe(mode === 'bulk');
      expect(cli.bulk).toBe(pipeline.bulk);
      expect(pipeline.scores.size).toBeGreaterThan(AUTO_BULK_THRESHOLD);
      expect(Object.fromEntries([...cli.scores].sort())).toEqual(
        Object.fromEntries([...pipeline.scores].sort()),
      );
    },
  );
});

import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { type Simulator, startSimulator } from '@urs/simulator';
import { defenderCommand } from '../../src/commands/defender';
import { scoreCommand } from '../../src/commands/score';
import { runCommand, type CommandRun } from '../support/run';

interface App {
  azureTenantId: string;
  clientId: string;
  clientSecret: string;
}

let sim: Simulator;
let dir: string;
let app: App;
let machineOnly: App;
/** Devices not merged into another one: what `devices` writes, as the pipeline scores them. */
let listedCount: number;

function newApp(azureTenantId: string = randomUUID()): App {
  return { azureTenantId, clientId: randomUUID(), clientSecret: `Qx9~${randomUUID().replace(/-/g, '')}` };
}

function secretFile(secret: string): string {
  const file = join(dir, `${randomUUID()}.secret`);
  writeFileSync(file, `${secret}\n`);
  return file;
}

function args(action: string, from: App, ...more: string[]): string[] {
  return [
    action,
    '--azure-tenant-id',
    from.azureTenantId,
    '--client-id',
    from.clientId,
    '--client-secret-file',
    secretFile(from.clientSecret),
    ...more,
  ];
}

async function run(
  argv: string[],
  env: NodeJS.ProcessEnv = {},
  command = defenderCommand,
  stdin: NodeJS.ReadableStream = Readable.from([]),
): Promise<CommandRun> {
  return runCommand(command, argv, {
    stdin,
    env: {
      URS_DEFENDER_AUTHORITY_HOST: sim.baseUrl,
      URS_DEFENDER_API_BASE: sim.baseUrl,
      URS_DEFENDER_CA_FILE: sim.caFile,
      ...env,
    },
  });
}

const ids = (from: App): string[] => sim.machines(from.azureTenantId).map((m) => m.id);
/** The devices the pipeline scores: every one not merged into another, excluded ones too. */
const listed = (from: App): string[] =>
  sim
    .machines(from.azureTenantId)
    .filter((m) => !m.mergedIntoMachineId)
    .map((m) => m.id);
/** The devices whose vulnerabilities are asked for: those listed, but for the excluded ones. */
const asked = (from: App): string[] =>
  sim
    .machines(from.azureTenantId)
    .filter((m) => !m.mergedIntoMachineId && !m.isExcluded)
    .map((m) => m.id);

/**
 * The records with a vulnerability list are exactly the devices asked for (not merged, not excluded), one each,
 * and each lists the CVEs the simulator holds for it.
 */
function expectEachDeviceCves(records: Record<string, unknown>[], from: App): void {
  const scorable = asked(from).sort();
  expect(scorable.length).toBeGreaterThan(0);
  const withList = records.filter((r) => Array.isArray(r.vulnerabilities));
  expect(withList.map((r) => r.id as string).sort()).toEqual(scorable);
  expect(withList).toHaveLength(scorable.length);
  const cves = (list: { id: string }[]): string[] => [...new Set(list.map((v) => v.id))].sort();
  expect(
    Object.fromEntries(withList.map((r) => [r.id as string, cves(r.vulnerabilities as { id: string }[])])),
  ).toEqual(
    Object.fromEntries(scorable.map((id) => [id, cves(sim.vulnerabilities(from.azureTenantId, id))])),
  );
}

function lines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

beforeAll(async () => {
  sim = await startSimulator({ quotas: false });
  dir = mkdtempSync(join(tmpdir(), 'urs-cli-defender-'));
  app = newApp();
  machineOnly = newApp(app.azureTenantId);
  sim.addTenant({
    azureTenantId: app.azureTenantId,
    apps: [app, { ...machineOnly, roles: ['Machine.Read.All'] }],
    fleet: { size: 30, seed: 21 },
  });
  const ids = sim.machines(app.azureTenantId).map((m) => m.id);
  sim.updateMachine(app.azureTenantId, ids[0] as string, { isExcluded: true });
  listedCount = listed(app).length;
  expect(listedCount).toBeLessThan(30);
});

afterAll(async () => {
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('urs defender devices', () => {
  it('defenderCommand should write every device the pipeline scores as an NDJSON machine record', async () => {
    const result = await run(args('devices', app, '--page-size', '7', '--no-redis'));
    expect(result.code).toBe(0);
    const records = lines(result.stdout);
    expect(records.map((r) => r.id).sort()).toEqual(listed(app).sort());
    expect(records.every((r) => !('vulnerabilities' in r))).toBe(true);
    expect(result.stderr).toContain(
      `done: ${listedCount} devices written, ${30 - listedCount} merged skipped, 0 invalid records skipped`,
    );
  });

  it.each(['per-device', 'bulk'])(
    'defenderCommand should write an excluded device as the pipeline scores it, and no merged one (%s)',
    async (mode) => {
      sim.resetStats();
      const result = await run(
        args('devices', app, '--with-vulnerabilities', '--vulnerabilities-mode', mode, '--no-redis'),
      );
      expect(result.code).toBe(0);
      const records = new Map(lines(result.stdout).map((r) => [r.id as string, r]));
      expect([...records.keys()].sort()).toEqual(listed(app).sort());
      const excluded = sim.machines(app.azureTenantId).filter((m) => m.isExcluded && !m.mergedIntoMachineId);
      expect(excluded.length).toBeGreaterThan(0);
      for (const machine of excluded)
        expect(records.get(machine.id)).toMatchObject({
          vulnerabilities: null,
          fetchError: { code: 'EXCLUDED' },
        });
      // No call of the tenant's quota for a device Microsoft holds no vulnerabilities of.
      if (mode === 'per-device')
        expect(sim.stats().callsByTenant[app.azureTenantId]?.vulnerabilities).toBe(asked(app).length);
      const scores = await run([], {}, scoreCommand, Readable.from([result.stdout]));
      const results = new Map(lines(scores.stdout).map((r) => [r.deviceId as string, r]));
      for (const machine of excluded)
        expect(results.get(machine.id)?.missingReasons).toMatchObject({ criticalCves: 'EXCLUDED' });
    },
  );

  it('defenderCommand should take --include-flagged for what it always does now, merged devices still left out', async () => {
    const result = await run(args('devices', app, '--include-flagged', '--no-redis'));
    expect(result.code).toBe(0);
    expect(
      lines(result.stdout)
        .map((r) => r.id)
        .sort(),
    ).toEqual(listed(app).sort());
    expect(result.stderr).toContain('--include-flagged is no longer needed');
  });

  it('defenderCommand should write a device first seen too recently for the export snapshot without vulnerabilities, as the pipeline does', async () => {
    const fresh = newApp();
    sim.addTenant({ azureTenantId: fresh.azureTenantId, apps: [fresh], fleet: { size: 4, seed: 9 } });
    try {
      const [young, old] = ids(fresh) as [string, string];
      sim.updateMachine(fresh.azureTenantId, young, {
        firstSeen: new Date(Date.now() - 3_600_000).toISOString(),
        isExcluded: false,
        mergedIntoMachineId: null,
      });
      sim.updateMachine(fresh.azureTenantId, old, {
        firstSeen: new Date(Date.now() - 30 * 86_400_000).toISOString(),
        isExcluded: false,
        mergedIntoMachineId: null,
      });
      sim.setVulnerabilities(fresh.azureTenantId, young, []);
      sim.setVulnerabilities(fresh.azureTenantId, old, []);
      sim.generateExport(fresh.azureTenantId);
      const result = await run(
        args('devices', fresh, '--with-vulnerabilities', '--vulnerabilities-mode', 'bulk', '--no-redis'),
      );
      expect(result.code).toBe(0);
      const records = new Map(lines(result.stdout).map((r) => [r.id, r]));
      expect(records.get(young)).toMatchObject({
        vulnerabilities: null,
        fetchError: { code: 'NOT_IN_EXPORT_SNAPSHOT' },
      });
      expect(records.get(old)).toMatchObject({ vulnerabilities: [] });
      const scores = await run([], {}, scoreCommand, Readable.from([result.stdout]));
      const results = new Map(lines(scores.stdout).map((r) => [r.deviceId, r]));
      expect(results.get(young)?.missingReasons).toMatchObject({ criticalCves: 'NOT_IN_EXPORT_SNAPSHOT' });
      expect(results.get(old)?.missing).not.toContain('criticalCves');
    } finally {
      sim.removeTenant(fresh.azureTenantId);
    }
  });

  it.each(['per-device', 'bulk'])(
    'defenderCommand should add each device’s vulnerabilities (%s)',
    async (mode) => {
      const result = await run(
        args('devices', app, '--with-vulnerabilities', '--vulnerabilities-mode', mode, '--no-redis'),
      );
      expect(result.code).toBe(0);
      expectEachDeviceCves(lines(result.stdout), app);
    },
  );

  it('defenderCommand should choose per-device calls for a small fleet and the bulk export for a large one', async () => {
    const large = newApp();
    sim.addTenant({ azureTenantId: large.azureTenantId, apps: [large], fleet: { size: 300, seed: 5 } });
    sim.resetStats();
    const small = await run(args('devices', app, '--with-vulnerabilities', '--no-redis'));
    expect(small.code).toBe(0);
    expect(small.stderr).not.toContain('bulk export');
    expect(sim.stats().callsByTenant[app.azureTenantId]?.vulnerabilities).toBe(asked(app).length);
    expectEachDeviceCves(lines(small.stdout), app);
    const big = await run(args('devices', large, '--with-vulnerabilities', '--no-redis'));
    expect(big.code).toBe(0);
    expect(big.stderr).toContain('reading vulnerabilities from the bulk export');
    expect(sim.stats().callsByTenant[large.azureTenantId]?.vulnerabilities).toBeUndefined();
    const records = lines(big.stdout);
    expect(records.map((r) => r.id).sort()).toEqual(listed(large).sort());
    expectEachDeviceCves(records, large);
    const askedFor = new Set(asked(large));
    const excluded = records.filter((r) => !askedFor.has(r.id as string));
    expect(excluded).toHaveLength(listed(large).length - askedFor.size);
    for (const record of excluded)
      expect(record).toMatchObject({ vulnerabilities: null, fetchError: { code: 'EXCLUDED' } });
  });

  it('defenderCommand should write null vulnerabilities, once explained, when consent for them is missing', async () => {
    const result = await run(
      args(
        'devices',
        machineOnly,
        '--with-vulnerabilities',
        '--vulnerabilities-mode',
        'per-device',
        '--no-redis',
      ),
    );
    expect(result.code).toBe(0);
    const records = lines(result.stdout);
    expect(records.length).toBe(listedCount);
    expect(records.every((r) => r.vulnerabilities === null)).toBe(true);
    expect(
      result.stderr.match(/vulnerabilities unavailable for every device: .*Vulnerability\.Read\.All/g),
    ).toHaveLength(1);
    // Why, beside each null list: the error's code, never its text (that went to stderr once); an excluded
    // device keeps its own reason, as in the pipeline.
    const askedFor = new Set(asked(machineOnly));
    const codes = new Set(
      records.filter((r) => askedFor.has(r.id as string)).map((r) => JSON.stringify(r.fetchError)),
    );
    expect([...codes]).toEqual([JSON.stringify({ code: 'DEFENDER_CONSENT_MISSING' })]);
    // urs score reads it: criticalCves is missing for want of a fetch, as the pipeline says it.
    const scored = await run([], {}, scoreCommand, Readable.from([result.stdout]));
    expect(scored.code).toBe(0);
    const reasons = lines(scored.stdout).map((r) => [
      r.deviceId,
      (r.missingReasons as Record<string, string>).criticalCves,
    ]);
    expect(reasons).toEqual(
      listed(machineOnly).map((id) => [id, askedFor.has(id) ? 'FETCH_FAILED' : 'EXCLUDED']),
    );
  });

  it.each(['per-device', 'bulk'])(
    'defenderCommand should say beside a null list that none of the rows could be read, for urs score to say so (%s)',
    async (mode) => {
      const unreadable = newApp();
      sim.addTenant({
        azureTenantId: unreadable.azureTenantId,
        apps: [unreadable],
        fleet: { size: 4, seed: 8 },
      });
      const [m0, m1] = sim.machines(unreadable.azureTenantId).map((m) => m.id) as [string, string];
      const row = sim.vulnerabilities(app.azureTenantId, ids(app)[1] as string)[0];
      if (!row) throw new Error('the fleet has no vulnerability to copy');
      // m0's rows all have a score out of range; m1 has none.
      sim.setVulnerabilities(unreadable.azureTenantId, m0, [{ ...row, id: 'CVE-2024-1', cvssV3: 11 }]);
      sim.setVulnerabilities(unreadable.azureTenantId, m1, []);
      sim.generateExport(unreadable.azureTenantId);
      const result = await run(
        args('devices', unreadable, '--with-vulnerabilities', '--vulnerabilities-mode', mode, '--no-redis'),
      );
      expect(result.code).toBe(0);
      const records = new Map(lines(result.stdout).map((r) => [r.id, r]));
      expect(records.get(m0)).toMatchObject({
        vulnerabilities: null,
        fetchError: { code: 'DEFENDER_UNREADABLE_RECORDS' },
      });
      expect(records.get(m1)).toMatchObject({ vulnerabilities: [] });
      expect(records.get(m1)).not.toHaveProperty('fetchError');
      const scored = await run([], {}, scoreCommand, Readable.from([result.stdout]));
      const results = new Map(lines(scored.stdout).map((r) => [r.deviceId, r]));
      expect(results.get(m0)?.missingReasons).toEqual({ criticalCves: 'DEFENDER_UNREADABLE_RECORDS' });
      expect(results.get(m1)?.missing).not.toContain('criticalCves');
    },
  );

  it('defenderCommand should exit 1 with the typed error’s message, and never the secret, when sign-in fails', async () => {
    const wrong = { ...app, clientSecret: 'totally-wrong-secret-value-42' };
    const result = await run(args('devices', wrong, '--no-redis'));
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain("Paste the secret's Value, not its ID");
    expect(result.stderr).toContain('[DEFENDER_INVALID_SECRET]');
    expect(result.stderr).not.toContain(wrong.clientSecret);
  });

  it('defenderCommand output should pipe straight into urs score', async () => {
    const devices = await run(args('devices', app, '--with-vulnerabilities', '--no-redis'));
    const scored = await run([], {}, scoreCommand, Readable.from([devices.stdout]));
    expect(scored.code).toBe(0);
    const results = lines(scored.stdout);
    expect(results.length).toBe(listedCount);
    expect(results.every((r) => typeof r.score === 'number' && typeof r.band === 'string')).toBe(true);
  });

  it('defenderCommand should fall back to an in-process limiter when Redis is not reachable', async () => {
    const result = await run(args('devices', app), { REDIS_URL: 'redis://127.0.0.1:1' });
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('is not reachable: using an in-process limiter and quota');
    expect(lines(result.stdout).length).toBe(listedCount);
  });
});

describe('urs defender check', () => {
  it('defenderCommand check should print one OK line when credentials and consent work', async () => {
    const result = await run(args('check', app, '--no-redis'));
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(
      'OK: credentials and consent work; the token carries Machine.Read.All, Vulnerability.Read.All. ' +
        'Alert.Read.All is not needed and may be removed.\n',
    );
  });

  it('defenderCommand check should print one FAIL line naming the missing permissions', async () => {
    const result = await run(args('check', machineOnly, '--no-redis'));
    expect(result.code).toBe(1);
    expect(result.stdout.trim().split('\n')).toHaveLength(1);
    expect(result.stdout).toMatch(/^FAIL: credentials work, but the token lacks Vulnerability\.Read\.All: /);
  });

  it('defenderCommand check should print one FAIL line naming the licence when vulnerabilities are refused', async () => {
    const plan1 = newApp();
    sim.addTenant({ azureTenantId: plan1.azureTenantId, apps: [plan1], fleet: { size: 3, seed: 5 } });
    sim.setFaults(plan1.azureTenantId, { disabledFeature: ['vulnerabilities', 'bulk', 'exportFiles'] });
    try {
      const result = await run(args('check', plan1, '--no-redis'));
      expect(result.code).toBe(1);
      expect(result.stdout.trim().split('\n')).toHaveLength(1);
      expect(result.stdout).toMatch(
        /^FAIL: credentials work and the device list is readable, but vulnerabilities are not: .*403 DisabledFeature.*Defender for Endpoint Plan 2/,
      );
    } finally {
      sim.removeTenant(plan1.azureTenantId);
    }
  });
});

describe('urs defender check of a throttled tenant', () => {
  it('defenderCommand check answered a 429 asking for 10 minutes should print one FAIL line at once, not wait', async () => {
    const throttled = newApp();
    sim.addTenant({ azureTenantId: throttled.azureTenantId, apps: [throttled], fleet: { size: 3, seed: 5 } });
    sim.setFaults(throttled.azureTenantId, { throttledCalls: 1, throttleRetryAfterSec: 600 });
    try {
      const result = await run(args('check', throttled, '--no-redis'));
      expect(result.code).toBe(1);
      expect(result.stdout).toBe(
        `FAIL: The Defender API throttled tenant ${throttled.azureTenantId} on /api/machines (429): it asks to wait 600 s\n`,
      );
    } finally {
      sim.removeTenant(throttled.azureTenantId);
    }
  }, 20_000);
});

describe('urs defender usage', () => {
  it('defenderCommand should exit 2 naming a missing option', async () => {
    const result = await run(['devices', '--azure-tenant-id', 'x', '--client-secret-file', secretFile('s')]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--client-id is required');
  });

  it('defenderCommand should exit 2, bad usage, naming the option for an unknown cloud or region', async () => {
    const cloud = await run(args('devices', app, '--cloud', 'mars', '--no-redis'));
    expect(cloud.code).toBe(2);
    expect(cloud.stderr).toContain('--cloud must be one of commercial, gcc, gcc-high, dod');
    const region = await run(args('devices', app, '--region', 'moon', '--no-redis'));
    expect(region.code).toBe(2);
    expect(region.stderr).toContain('--region must be one of us, eu, uk, au, swa, ina, aea');
  });

  it('defenderCommand should not echo a secret given where the secret file belongs', async () => {
    const secret = `Abc8Q~${randomUUID().replace(/-/g, '')}`;
    const result = await run([
      'devices',
      ...['--azure-tenant-id', app.azureTenantId, '--client-id', app.clientId],
      ...['--client-secret-file', secret, '--no-redis'],
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--client-secret-file: cannot read the file given (ENOENT)');
    expect(result.stderr).not.toContain(secret);
    expect(result.stderr).not.toContain('Abc8Q~');
  });

  it('defenderCommand should not echo a stray argument, naming its position instead', async () => {
    const secret = `Abc8Q~${randomUUID().replace(/-/g, '')}`;
    // `urs defender devices <7 arguments> <secret>`: the secret is argument 9 of `urs defender`.
    const stray = await run(args('devices', app, '--no-redis', secret));
    expect(stray.code).toBe(2);
    // Worded as every command of urs words it (`argumentsError`).
    expect(stray.stderr).toContain(
      'urs defender: unexpected argument (argument 9, not shown): this command takes options only',
    );
    expect(stray.stderr).not.toContain('Abc8Q~');
    const afterDashes = await run(args('devices', app, '--', secret));
    expect(afterDashes.code).toBe(2);
    expect(afterDashes.stderr).toContain('urs defender: unexpected argument (argument 9, not shown)');
    expect(afterDashes.stderr).not.toContain('Abc8Q~');
    // In the action's place.
    const action = await run([secret, ...args('devices', app).slice(1)]);
    expect(action.code).toBe(2);
    expect(action.stderr).toContain('unknown action (argument 1, not shown): it must be devices or check');
    expect(action.stderr).not.toContain('Abc8Q~');
  });

  it.each([
    ['a long option', (secret: string) => `--${secret}`],
    ['a long option with a value', (secret: string) => `--${secret}=x`],
    ['a short option', (secret: string) => `-${secret}`],
    ['a short option after -h', (secret: string) => `-h${secret}`],
  ])(
    'defenderCommand should not echo an unknown option, naming its position instead (%s)',
    async (_, given) => {
      const secret = `S3cr3t${randomUUID().replace(/-/g, '')}`;
      // `urs defender devices <7 arguments> <secret>`: the secret is argument 9 of `urs defender`.
      const result = await run(args('devices', app, '--no-redis', given(secret)));
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('unknown option (argument 9, not shown)');
      // Not even its first letter, as parseArgs names a short option.
      expect(result.stderr).not.toMatch(/'-/);
      expect(result.stderr).not.toContain(secret);
    },
  );

  it('defenderCommand should exit 2 for a page size above 10,000', async () => {
    const result = await run(args('devices', app, '--page-size', '20000'));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--page-size must be a whole number from 1 to 10000');
  });
});

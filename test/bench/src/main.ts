import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import {
  BULK_NEXT_UNIT_MS,
  bulkNextUnitMs,
  parseBenchArgs,
  USAGE,
  UsageError,
  type BenchOptions,
} from './args';
import { perDeviceRefreshHours, round, roundEach } from './analysis';
import { CALIBRATION_WORKLOAD, calibrate, MEMORY_WORKLOAD, type MemorySpeed, probeMemory } from './calibrate';
import { ensureStack, startPrivateRedis, stopStack } from './infra';
import { createBenchKafka, deleteTopics } from './kafka';
import { ProcessGroup } from './procs';
import {
  PER_DEVICE_QUOTA,
  bulkResult,
  costPerDevice,
  cycleLatencies,
  fleetResult,
  INTERNAL,
  internalCeiling,
  latencyByMode,
  latencyPercentiles,
  renderMarkdown,
  timelineOf,
  usageEach,
  type BenchResults,
} from './report';
import { runScenario, type RunContext, type ScenarioResult, type ScenarioSpec } from './scenario';
import { startSimulatorProcess } from './simulator';
import { renderTimeline } from './timeline';

/**
 * Variables that take Microsoft's quotas out of the services' own client-side quota gate, for the
 * scenarios that measure the call slots with the simulator's quotas off (per-device calls at 50/min
 * would otherwise make the slots idle by design).
 */
const QUOTAS_OFF_ENV: Record<string, string> = { URS_DEFENDER_QUOTAS: 'off' };

/** Per-device calls for a fleet are planned by the poller against the poll interval; a day lets 28,800 devices fit. */
const LONG_INTERVAL_MINUTES = 1440;

const ROOT = resolve(__dirname, '../../..');

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

function pollerAvailable(): boolean {
  const main = join(ROOT, 'services/poller/dist/main.js');
  return existsSync(main) && readFileSync(main, 'utf8').includes('runService');
}

function scenarioSpecs(options: BenchOptions): ScenarioSpec[] {
  const realPoller = options.driver === 'poller' || (options.driver === 'auto' && pollerAvailable());
  const specs: ScenarioSpec[] = [];
  const base = {
    jitterMs: options.jitterMs,
    sampleMs: options.sampleMs,
    staggerMs: 0,
    profile: options.profile,
    replicas: options.replicas,
    warmupDevices: 0,
  };
  for (const size of options.sizes) {
    // Per-device calls at any fleet size: injected batches say `per-device` whatever the quota plan says.
    const expectedMs = options.latencyMs > 0 ? (size * options.latencyMs) / 10 : size;
    specs.push({
      ...base,
      name: `fleet-${size}`,
      tenants: [size],
      driver: options.driver === 'poller' ? 'poller' : 'inject',
      mode: 'per-device',
      latencyMs: options.latencyMs,
      simQuotas: false,
      pollIntervalMinutes: LONG_INTERVAL_MINUTES,
      extraEnv: { ...QUOTAS_OFF_ENV, ...options.env },
      timeoutMs: expectedMs * 2 + options.slackMs,
    });
  }
  if (options.cycleTenants > 0) {
    const devices = options.cycleTenants * options.cycleDevices;
    specs.push({
      ...base,
      name: 'cycles',
      tenants: Array.from({ length: options.cycleTenants }, () => options.cycleDevices),
      driver: realPoller ? 'poller' : 'inject',
      mode: 'per-device',
      latencyMs: options.latencyMs,
      simQuotas: false,
      pollIntervalMinutes: LONG_INTERVAL_MINUTES,
      extraEnv: { ...QUOTAS_OFF_ENV, ...options.env },
      timeoutMs: ((devices * Math.max(1, options.latencyMs)) / 10) * 2 + options.slackMs,
      staggerMs: 1_000,
    });
  }
  if (options.internalDevices > 0) {
    for (let run = 1; run <= options.internalRuns; run++)
      specs.push({
        ...base,
        name: `${INTERNAL}-${run}`,
        tenants: [options.internalDevices],
        driver: realPoller ? 'poller' : 'inject',
        mode: 'bulk',
        latencyMs: 0,
        jitterMs: 0,
        simQuotas: false,
        pollIntervalMinutes: 10,
        extraEnv: { ...QUOTAS_OFF_ENV, ...options.env },
        timeoutMs: options.internalDevices + options.slackMs,
        warmupDevices: options.internalWarmup,
      });
  }
  if (options.bulkDevices > 0) {
    // The same fleet's next cycles: a 10-"minute" interval of 6 s units (60 s) leaves each cycle time to
    // end under the quotas; 1 % of the devices change their vulnerabilities before the second (by default),
    // none before the ones after it (`bulk-same`: Microsoft's snapshot as it was).
    // A heavier export than the simulator's light mix needs a longer interval (see bulkNextUnitMs).
    const unitMs = bulkNextUnitMs(options);
    specs.push({
      ...base,
      name: 'bulk-next',
      tenants: [options.bulkDevices],
      driver: 'poller',
      mode: 'bulk',
      latencyMs: options.latencyMs,
      simQuotas: true,
      pollIntervalMinutes: 10,
      extraEnv: { ...options.env, URS_POLL_INTERVAL_UNIT_MS: String(unitMs) },
      timeoutMs: options.bulkDevices * 2 + options.slackMs + (unitMs - BULK_NEXT_UNIT_MS) * 10,
      nextCycles: [
        { changedDevices: options.bulkNextChanged },
        ...Array.from({ length: options.bulkSameCycles }, () => ({ changedDevices: 0 })),
      ],
    });
  }
  if (options.bulkDevices > 0) {
    specs.push({
      ...base,
      name: 'bulk-quotas',
      tenants: [options.bulkDevices],
      driver: realPoller ? 'poller' : 'inject',
      mode: 'bulk',
      latencyMs: options.latencyMs,
      simQuotas: true,
      pollIntervalMinutes: 10,
      extraEnv: { ...options.env },
      timeoutMs: options.bulkDevices * 2 + options.slackMs,
    });
  }
  return specs;
}

/** The machine's speed before each scenario and at the end of the run (see `calibrate` and `probeMemory`). */
interface Speed {
  beforeScenarioMs: Record<string, number>;
  endMs: number | null;
  memoryBeforeScenario: Record<string, MemorySpeed>;
  memoryEnd: MemorySpeed | null;
}

function machineSpeedText(workloadMs: number, memory: MemorySpeed): string {
  return (
    `${workloadMs} ms for the fixed workload, ${memory.readNs} ns a dependent read, ` +
    `${memory.freshPageUs} µs a fresh page (lower is faster)`
  );
}

function buildResults(
  options: BenchOptions,
  ctx: RunContext,
  startedAt: string,
  results: ScenarioResult[],
  errors: string[],
  speed: Speed,
): BenchResults {
  const fleets = results.filter((result) => result.spec.name.startsWith('fleet-'));
  const fleetEntries = fleets.flatMap((result) => {
    try {
      return [[String(result.spec.tenants[0]), fleetResult(result, ctx.privateRedis)] as const];
    } catch (error) {
      errors.push(`${result.spec.name}: ${(error as Error).message}`);
      return [];
    }
  });
  const fleetMap = Object.fromEntries(fleetEntries);
  const latencies = cycleLatencies(results);
  const { p50, p99 } = latencyPercentiles(latencies);
  const internal = internalCeiling(results.filter((result) => result.spec.name.startsWith(`${INTERNAL}-`)));
  const bulk = results.find((result) => result.spec.name === 'bulk-quotas');
  const refresh = perDeviceRefreshHours(100_000, PER_DEVICE_QUOTA);
  return {
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      node: process.version,
      kafkaBrokers: ctx.kafkaBrokers,
      redis: ctx.privateRedis ? 'private' : 'shared',
      calibration: {
        workload: CALIBRATION_WORKLOAD,
        beforeScenarioMs: speed.beforeScenarioMs,
        endMs: speed.endMs,
        memory: {
          workload: MEMORY_WORKLOAD,
          beforeScenario: speed.memoryBeforeScenario,
          end: speed.memoryEnd,
        },
      },
    },
    options: { ...options },
    slotUtilisation: Object.fromEntries(fleetEntries.map(([size, fleet]) => [size, fleet.slotUtilisation])),
    slotUtilisationAtConfiguredLatency: Object.fromEntries(
      fleetEntries.map(([size, fleet]) => [size, fleet.slotUtilisationAtConfiguredLatency]),
    ),
    publishLatencyP50Ms: p50,
    publishLatencyP99Ms: p99,
    publishLatencyByMode: latencyByMode(latencies),
    publishLatencyCycles: latencies,
    internalDevicesPerSec: internal ? internal.devicesPerSec : null,
    internal,
    peakRssMbByService: Object.fromEntries(fleetEntries.map(([size, fleet]) => [size, fleet.peakRssMb])),
    fleets: fleetMap,
    costPerDevice: Object.fromEntries(
      results.map((result) => [result.spec.name, costPerDevice(result, ctx.privateRedis)]),
    ),
    quotas: {
      perDeviceCallsPerHour: refresh.callsPerHour,
      perDeviceRefreshHours100k: round(refresh.hours, 2),
      bulk: bulk ? bulkResult(bulk) : null,
    },
    scenarios: Object.fromEntries(
      results.map((result) => [
        result.spec.name,
        {
          durationMs: result.durationMs,
          deadLetters: result.deadLetters,
          devices: result.devices,
          peakRssMb: usageEach(result, 'peakRssMb'),
          cpuSec: usageEach(result, 'cpuSec'),
          windowMs: result.windowMs,
          windowCpuSec: roundEach(result.windowCpuSec, 2),
          windowSystemCpuSec: roundEach(result.windowSystemCpuSec, 2),
          windowMinorFaults: result.windowMinorFaults,
          sim: {
            calls: result.sim.calls,
            peakConcurrency: result.sim.peakConcurrency,
            throttled: result.sim.throttled,
          },
        },
      ]),
    ),
    errors,
  };
}

function writeResults(outDir: string, results: BenchResults, pictures: Map<string, string>): void {
  mkdirSync(outDir, { recursive: true });
  const json = `${JSON.stringify(results, null, 2)}\n`;
  writeFileSync(join(outDir, 'latest.json'), json);
  writeFileSync(join(outDir, `${results.startedAt.replace(/:/g, '-')}.json`), json);
  writeFileSync(join(outDir, 'latest.md'), renderMarkdown(results));
  for (const [name, svg] of pictures) writeFileSync(join(outDir, name), svg);
}

async function main(): Promise<number> {
  let options: BenchOptions;
  try {
    options = parseBenchArgs(process.argv.slice(2));
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`bench: ${error.message}\n${USAGE}\n`);
      return 2;
    }
    throw error;
  }
  const startedAt = new Date().toISOString();
  const runId = Date.now().toString(36);
  const outDir = resolve(ROOT, options.outDir);
  const runDir = join(outDir, 'logs', startedAt.replace(/:/g, '-'));
  mkdirSync(runDir, { recursive: true });
  const group = new ProcessGroup();
  let stackStarted = false;
  let interrupted = false;
  let kafkaForCleanup: ReturnType<typeof createBenchKafka> | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log(`${signal}: stopping everything the bench started`);
    void (async () => {
      await group.stopAll(10_000);
      // The interrupted scenario's topics (every topic of this run starts with its id).
      if (kafkaForCleanup) {
        const kafka = kafkaForCleanup;
        await (async () => {
          const admin = kafka.admin();
          await admin.connect();
          const mine = (await admin.listTopics()).filter((topic) => topic.startsWith(`bench-${runId}-`));
          await admin.disconnect();
          await deleteTopics(kafka, mine);
        })().catch(() => undefined);
      }
      if (stackStarted && !options.keepStack) await stopStack(ROOT).catch(() => undefined);
      process.exit(130);
    })();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const errors: string[] = [];
  const results: ScenarioResult[] = [];
  const speed: Speed = { beforeScenarioMs: {}, endMs: null, memoryBeforeScenario: {}, memoryEnd: null };
  try {
    log(`logs in ${runDir}`);
    const stack = await ensureStack(ROOT, options.redis === 'private');
    stackStarted = stack.startedKafka;
    const infraPids: Record<string, number> = {};
    if (stack.kafkaPid !== undefined) infraPids['kafka'] = stack.kafkaPid;
    let redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
    if (options.redis === 'private') {
      const privateRedis = await startPrivateRedis(group, ROOT, runDir);
      redisUrl = privateRedis.url;
      infraPids['redis'] = privateRedis.child.pid;
    }
    if (!/^redis:\/\/(127\.0\.0\.1|localhost)(:\d+)?\/?/.test(redisUrl))
      throw new Error(`the bench only talks to a loopback Redis, not ${redisUrl}`);
    const sim = await startSimulatorProcess(group, ROOT, runDir, {
      latencyMs: options.latencyMs,
      jitterMs: options.jitterMs,
      quotas: false,
      exportVolume: {
        ...(options.exportRowsPerDevice === undefined
          ? {}
          : { exportRowsPerDevice: options.exportRowsPerDevice }),
        ...(options.exportSoftwareOnlyShare === undefined
          ? {}
          : { exportSoftwareOnlyShare: options.exportSoftwareOnlyShare }),
      },
    });
    infraPids['simulator'] = sim.child.pid;
    log(`simulator at ${sim.baseUrl}, Redis ${redisUrl}, Kafka ${stack.kafkaBrokers.join(',')}`);
    kafkaForCleanup = createBenchKafka(stack.kafkaBrokers, `bench-${runId}-cleanup`);
    const ctx: RunContext = {
      root: ROOT,
      runDir,
      runId,
      group,
      kafka: createBenchKafka(stack.kafkaBrokers, `bench-${runId}`),
      kafkaBrokers: stack.kafkaBrokers,
      redisUrl,
      privateRedis: options.redis === 'private',
      sim,
      infraPids,
      log,
    };
    const pictures = new Map<string, string>();
    for (const spec of scenarioSpecs(options)) {
      if (interrupted) break;
      try {
        // The machine's speed moves from minute to minute: each scenario's own, before its services start.
        const workloadMs = calibrate().medianMs;
        const memory = probeMemory();
        speed.beforeScenarioMs[spec.name] = workloadMs;
        speed.memoryBeforeScenario[spec.name] = memory;
        log(`  machine speed: ${machineSpeedText(workloadMs, memory)}`);
        const result = await runScenario(ctx, spec);
        results.push(result);
        // The raw material of the numbers, for a closer look: samples and per-batch events of every cycle.
        writeFileSync(
          join(runDir, `${spec.name}.raw.json`),
          JSON.stringify({
            spec,
            sim: result.sim,
            samples: result.samples,
            cpuSamples: result.cpuSamples,
            cycles: result.cycles,
          }),
        );
        const cycle = [...result.cycles].sort((a, b) => b.summary.devices.total - a.summary.devices.total)[0];
        if (cycle) pictures.set(`timeline-${spec.name}.svg`, renderTimeline(timelineOf(result, cycle)));
        log(`  ${spec.name}: ${result.devices} devices in ${(result.durationMs / 1000).toFixed(1)} s`);
      } catch (error) {
        const message = `${spec.name}: ${(error as Error).message}`;
        if (process.env['URS_BENCH_DEBUG']) log((error as Error).stack ?? '');
        errors.push(message);
        log(`  FAILED ${message}`);
      }
      // Partial results after each scenario, so an interrupted run still leaves numbers.
      const partial = buildResults(options, ctx, startedAt, results, [...errors], speed);
      const largestFleet = results.filter((result) => result.spec.name.startsWith('fleet-')).at(-1);
      if (largestFleet)
        pictures.set('latest.svg', pictures.get(`timeline-${largestFleet.spec.name}.svg`) ?? '');
      writeResults(outDir, partial, pictures);
    }
    // Every service has stopped: the machine runs only the broker, Redis and the simulator, idle.
    const workloadMs = calibrate().medianMs;
    const memory = probeMemory();
    speed.endMs = workloadMs;
    speed.memoryEnd = memory;
    log(`machine speed at the end: ${machineSpeedText(workloadMs, memory)}`);
    const final = buildResults(options, ctx, startedAt, results, errors, speed);
    writeResults(outDir, final, pictures);
    process.stdout.write(renderMarkdown(final));
    log(`results in ${join(outDir, 'latest.json')} and latest.md`);
    return errors.length > 0 ? 1 : 0;
  } finally {
    await group.stopAll();
    if (stackStarted && !options.keepStack)
      await stopStack(ROOT).catch((error: Error) => log(`stack down failed: ${error.message}`));
  }
}

main().then(
  (code) => process.exit(code),
  (error: Error) => {
    log(`bench failed: ${error.stack ?? error.message}`);
    process.exit(1);
  },
);

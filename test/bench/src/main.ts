import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseBenchArgs, USAGE, UsageError, type BenchOptions } from './args';
import { calibrate, probeMemory } from './calibrate';
import { ensureStack, startPrivateRedis, stopStack } from './infra';
import { createBenchKafka, deleteTopics } from './kafka';
import { ProcessGroup } from './procs';
import { renderMarkdown, timelineOf } from './report';
import { buildResults, clearPictures, machineSpeedText, writeResults, type Speed } from './results';
import { runScenario, type RunContext, type ScenarioResult } from './scenario';
import { scenarioSpecs } from './scenario-specs';
import { startSimulatorProcess } from './simulator';
import { renderTimeline } from './timeline';

const ROOT = resolve(__dirname, '../../..');

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
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
  // An earlier run's pictures would stand next to this run's numbers (a scenario that fails draws none).
  clearPictures(outDir);
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
    for (const spec of scenarioSpecs(options, ROOT)) {
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
        if (cycle)
          pictures.set(`timeline-${spec.name}.svg`, renderTimeline(timelineOf(result, cycle, startedAt)));
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

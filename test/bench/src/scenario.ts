import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import { Partitioners } from 'kafkajs';
import { topicsConfig, type Topics } from '@urs/config';
import { DEFAULT_PROFILE } from '@urs/scoring';
import { closeRedis, createCycleStore, createRedis } from '@urs/store';
import type { CpuSample } from './analysis';
import { commandStats, deleteKeys, redisCommand } from './infra';
import { injectCycle } from './inject';
import { deleteTopics, watchSummaries, type SummaryRecord, type TopicTotals } from './kafka';
import { startPipeline, SERVICES, type Pipeline, type ServiceName } from './pipeline';
import type { ProcessGroup } from './procs';
import { processUsage, usageAfterIdle, type ProcessUsage } from './procstat';
import { collect, cycleRecord, type CycleRecord } from './scenario-records';
import type { SimStats, SimulatorProcess, StatsSample } from './simulator';
import {
  commandsCalledSince,
  pick,
  processCounterGrowth,
  snapshotOutcomes,
  snapshotOutcomesSince,
  type Counter,
} from './window-counters';

export { curves, keyedBy, type CycleRecord } from './scenario-records';

export interface ScenarioSpec {
  name: string;
  /** Fleet size of each tenant; their cycles run at once. */
  tenants: number[];
  driver: 'poller' | 'inject';
  /** Vulnerability mode of injected batches (the poller decides on its own). */
  mode: 'per-device' | 'bulk';
  latencyMs: number;
  jitterMs: number;
  simQuotas: boolean;
  pollIntervalMinutes: number;
  /** Extra variables of every service. */
  extraEnv: Record<string, string>;
  /** Longest wait for every summary, ms. */
  timeoutMs: number;
  /** Pause between two tenants' registrations (or injections), ms. */
  staggerMs: number;
  sampleMs: number;
  /** Services run with `--cpu-prof`. */
  profile: readonly string[];
  /** Processes per service (default 1 each). */
  replicas: Partial<Record<ServiceName, number>>;
  /**
   * Devices of a tenant whose cycle runs through the same processes before the measured window (0: none),
   * so the window measures services in their steady state: code compiled, heaps and buffers grown (a page
   * touched for the first time costs 1.3–16 µs on the build VM, depending on the day). Its records are left out of every count.
   */
  warmupDevices: number;
  /**
   * Measure each tenant's next cycles instead of its first: after the first summary, and again after each
   * next one, the vulnerabilities of `changedDevices` devices per tenant change in the simulator (0: none,
   * Microsoft's snapshot stays as it was), and the scenario waits for the tenant's next summary (the
   * poller's interval is `pollIntervalMinutes` of `URS_POLL_INTERVAL_UNIT_MS`, which the spec's `extraEnv`
   * sets). Only the next cycles' records are counted, in order; the usage window spans every cycle.
   */
  nextCycles?: { changedDevices: number }[];
}

/**
 * Changes the vulnerabilities of `count` devices of a tenant in the simulator: device i takes those of
 * device i + count, so most of them change (a device may keep its critical count).
 */
async function changeVulnerabilities(
  sim: SimulatorProcess,
  azureTenantId: string,
  count: number,
): Promise<void> {
  const machines = await sim.machines(azureTenantId, 0, count * 2);
  const path = (id: unknown): string =>
    `/_sim/tenants/${encodeURIComponent(azureTenantId)}/machines/${encodeURIComponent(String(id))}/vulnerabilities`;
  for (let i = 0; i + count < machines.length; i++) {
    const donor = await sim.call<{ value: unknown[] }>('GET', path(machines[i + count]?.['id']));
    await sim.call('PUT', path(machines[i]?.['id']), donor.value);
  }
}

export interface RunContext {
  root: string;
  runDir: string;
  runId: string;
  group: ProcessGroup;
  kafka: Kafka;
  kafkaBrokers: string[];
  redisUrl: string;
  privateRedis: boolean;
  sim: SimulatorProcess;
  /** Processes beside the services whose CPU the scenario reports (the broker, the private Redis, the simulator). */
  infraPids: Record<string, number>;
  log: (line: string) => void;
}

export interface ScenarioResult {
  spec: ScenarioSpec;
  topics: Topics;
  cycles: CycleRecord[];
  devices: number;
  sim: SimStats;
  samples: StatsSample[];
  /** Per process: `<service>`, and `<service>#<n>` for its later replicas. */
  usage: Record<string, ProcessUsage>;
  /**
   * CPU seconds of each service and of the broker, Redis and the simulator from the first registration
   * to the last summary: where the two cores went while the cycles ran (start-up not included).
   */
  windowCpuSec: Record<string, number>;
  /** Of `windowCpuSec`, the system (kernel) seconds of each process. */
  windowSystemCpuSec: Record<string, number>;
  /** Minor page faults of each process within the window. */
  windowMinorFaults: Record<string, number>;
  windowMs: number;
  /** CPU seconds of the same processes read every `CPU_SAMPLE_MS` over the window (the timeline's CPU lane). */
  cpuSamples: CpuSample[];
  kafka: Record<string, TopicTotals>;
  redisCalls: Record<string, number>;
  /** ms over which `redisCalls` were counted: from before the first registration to after the services went idle. */
  redisWindowMs?: number;
  /**
   * Redis commands of the same processes over an idle interval of `ms` before the first registration (private
   * Redis only): the background (health PINGs, the limiter's reconciliation) that `redisCalls` also counts.
   */
  redisIdle?: { commands: number; ms: number };
  /** Dead letters written during the scenario (should be 0). */
  deadLetters: number;
  durationMs: number;
  /**
   * ms the services took to go idle after the last summary, before their usage was read; null when they
   * were still busy after IDLE_TIMEOUT_MS (read anyway).
   */
  idleMs: number | null;
  /** The same after the warm-up cycle (absent without one): null, its trailing work landed in the window. */
  warmupIdleMs?: number | null;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** How often the CPU time of every process is read during a scenario (the kernel counts in 10 ms ticks). */
const CPU_SAMPLE_MS = 250;
/** Longest the services may stay busy after the last summary before their memory is read anyway. */
const IDLE_TIMEOUT_MS = 120_000;
/**
 * The idle interval before a scenario's tenants are registered over which Redis's background rate is read:
 * two of each 5 s background round (the services' health PING, the call limiter's reconciliation).
 */
const REDIS_IDLE_MS = 10_000;

/**
 * A warm-up before the measured window: its cycle up to its summary, then until no service holds a message it
 * has not finished (`Pipeline.idle`: a bulk cycle's export is stored after its last batch is sent), so none of
 * its trailing work lands in the window. `idle` gives up at `idleTimeoutMs` (or when a process crashed, which
 * the window's first wait then reports), so this cannot hang. The ms it took to go idle, or null when it
 * did not.
 */
export async function warmUp(
  steps: {
    cycle: () => Promise<void>;
    idle: (timeoutMs: number) => Promise<number | undefined>;
    log: (line: string) => void;
  },
  idleTimeoutMs: number,
): Promise<number | null> {
  await steps.cycle();
  const idleMs = await steps.idle(idleTimeoutMs);
  steps.log(
    idleMs === undefined
      ? `  services still busy ${idleTimeoutMs / 1000} s after the warm-up summary; measured anyway`
      : `  services idle ${(idleMs / 1000).toFixed(1)} s after the warm-up summary`,
  );
  return idleMs ?? null;
}

/**
 * Runs one scenario end to end with services of its own (fresh processes, so peak RSS belongs to this
 * scenario), its own topics and keys, then reads what the topics recorded and removes them.
 */
export async function runScenario(ctx: RunContext, spec: ScenarioSpec): Promise<ScenarioResult> {
  const started = Date.now();
  const topicPrefix = `bench-${ctx.runId}-${spec.name}-`;
  const redisPrefix = `bench:${ctx.runId}:${spec.name}:`;
  const topics = topicsConfig({ URS_TOPIC_PREFIX: topicPrefix });
  const services: ServiceName[] = SERVICES.filter((name) => spec.driver === 'poller' || name !== 'poller');
  ctx.log(
    `scenario ${spec.name}: ${spec.tenants.length} tenant(s) of ${spec.tenants.join('/')} devices, ${spec.driver}, ${spec.mode}, latency ${spec.latencyMs} ms, quotas ${spec.simQuotas ? 'on' : 'off'}`,
  );
  await ctx.sim.setLatency(spec.latencyMs, spec.jitterMs);
  await ctx.sim.setQuotas(spec.simQuotas);
  let pipeline: Pipeline | undefined;
  let watcher: Awaited<ReturnType<typeof watchSummaries>> | undefined;
  let sampler: ReturnType<SimulatorProcess['sample']> | undefined;
  let cpuSampler: NodeJS.Timeout | undefined;
  const redis = createRedis({ url: ctx.redisUrl }, { connectionName: 'bench' });
  // Reconnect attempts after an interrupted run stopped the private Redis are expected, not worth a stack trace.
  redis.on('error', () => undefined);
  const producer = ctx.kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
  });
  const tenant = (name: string, size: number) => ({
    tenantId: `bench-${ctx.runId}-${spec.name}-${name}`,
    azureTenantId: randomUUID(),
    clientId: randomUUID(),
    clientSecret: `bench-secret-${randomUUID()}`,
    size,
  });
  const tenants = spec.tenants.map((size, index) => tenant(String(index), size));
  const warmup = spec.warmupDevices > 0 ? tenant('warmup', spec.warmupDevices) : undefined;
  try {
    pipeline = await startPipeline(ctx.group, {
      root: ctx.root,
      runDir: ctx.runDir,
      scenario: spec.name,
      kafkaBrokers: ctx.kafkaBrokers,
      redisUrl: ctx.redisUrl,
      topicPrefix,
      redisPrefix,
      simBaseUrl: ctx.sim.baseUrl,
      simCaFile: ctx.sim.caFile,
      services,
      extraEnv: spec.extraEnv,
      profile: spec.profile,
      replicas: spec.replicas,
    });
    ctx.log(`  services ready after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    watcher = await watchSummaries(ctx.kafka, topics.vmsRiskSummary, `${topicPrefix}bench-watch`);
    await producer.connect();
    for (const [index, tenant] of tenants.entries()) {
      await ctx.sim.addTenant({ ...tenant, seed: 1_000 + index });
    }
    const live = pipeline;
    const cycles = createCycleStore(redis, redisPrefix);
    /**
     * Registers a tenant and, when the bench drives the cycles, starts injecting its cycle: `injected`
     * settles once its batches are produced (wrapped, so awaiting this does not wait for them).
     */
    const startCycle = async (tenant: (typeof tenants)[number]): Promise<{ injected?: Promise<unknown> }> => {
      await live.register(tenant.tenantId, {
        enabled: true,
        azureTenantId: tenant.azureTenantId,
        clientId: tenant.clientId,
        clientSecret: tenant.clientSecret,
        pollIntervalMinutes: spec.pollIntervalMinutes,
      });
      if (spec.driver !== 'inject') return {};
      // The vuln-fetcher reads the tenant from Redis and the scorer its profile from urs.tenants: let both land.
      await sleep(1_500);
      const injected = injectCycle({
        sim: ctx.sim,
        producer,
        cycles,
        topic: topics.deviceBatches,
        tenantId: tenant.tenantId,
        azureTenantId: tenant.azureTenantId,
        devices: tenant.size,
        mode: spec.mode,
        cvssThreshold: DEFAULT_PROFILE.operational.criticalCves.cvssThreshold,
      });
      return { injected };
    };
    let warmupIdleMs: number | null | undefined;
    if (warmup) {
      const warmed = Date.now();
      const summaries = watcher;
      warmupIdleMs = await warmUp(
        {
          cycle: async () => {
            await ctx.sim.addTenant({ ...warmup, seed: 999 });
            await (
              await startCycle(warmup)
            ).injected;
            await summaries.waitFor([warmup.tenantId], spec.timeoutMs, () => live.crashed());
            ctx.log(
              `  warm-up cycle of ${warmup.size} devices done in ${((Date.now() - warmed) / 1000).toFixed(1)} s`,
            );
          },
          idle: (timeoutMs) => live.idle(timeoutMs),
          log: ctx.log,
        },
        IDLE_TIMEOUT_MS,
      );
    }
    let redisIdle: ScenarioResult['redisIdle'];
    if (ctx.privateRedis) {
      const idleFrom = await commandStats(ctx.redisUrl);
      const idleStart = Date.now();
      await sleep(REDIS_IDLE_MS);
      const idleCalls = commandsCalledSince(await commandStats(ctx.redisUrl), idleFrom);
      redisIdle = {
        commands: Object.values(idleCalls).reduce((sum, calls) => sum + calls, 0),
        ms: Date.now() - idleStart,
      };
    }
    const redisBefore = ctx.privateRedis ? await commandStats(ctx.redisUrl) : {};
    const redisFrom = Date.now();
    const usageNow = (): Record<string, ProcessUsage | null> => {
      const pids: [string, number][] = [
        ...[...live.children].map(([name, child]): [string, number] => [name, child.pid]),
        ...Object.entries(ctx.infraPids),
      ];
      return Object.fromEntries(pids.map(([name, pid]) => [name, processUsage(pid)]));
    };
    const cpuNow = (): Record<string, number> => pick(usageNow(), 'cpuSec');
    const usageBefore = usageNow();
    const cpuBefore = pick(usageBefore, 'cpuSec');
    const windowStart = Date.now();
    const cpuSamples: CpuSample[] = [{ t: windowStart, cpuSec: cpuBefore }];
    cpuSampler = setInterval(() => cpuSamples.push({ t: Date.now(), cpuSec: cpuNow() }), CPU_SAMPLE_MS);
    await ctx.sim.resetStats();
    sampler = ctx.sim.sample(spec.sampleMs);
    const injections: Promise<unknown>[] = [];
    for (const tenant of tenants) {
      const { injected } = await startCycle(tenant);
      if (injected) injections.push(injected);
      if (spec.staggerMs > 0) await sleep(spec.staggerMs);
    }
    await Promise.all(injections);
    const first = await watcher.waitFor(
      tenants.map((tenant) => tenant.tenantId),
      spec.timeoutMs,
      () => live.crashed(),
    );
    // Each measured cycle's summaries, with the devices changed before it (none for a first cycle).
    const measured: {
      summaries: typeof first;
      changedDevices?: number;
      snapshotOutcomes?: Record<string, number>;
    }[] = [];
    if (spec.nextCycles === undefined) measured.push({ summaries: first });
    const seen = new Set([...first.values()].map((summary) => summary.value.cycleId));
    for (const [index, { changedDevices }] of (spec.nextCycles ?? []).entries()) {
      // What the vuln-fetcher found of Microsoft's snapshot over this cycle, to check its mode's claim.
      const outcomesBefore = snapshotOutcomes(await live.metrics('vuln-fetcher'));
      for (const tenant of tenants)
        await changeVulnerabilities(ctx.sim, tenant.azureTenantId, changedDevices);
      ctx.log(
        `  cycle ${index + 1} done; ${changedDevices} devices per tenant changed, waiting for the next`,
      );
      const next = await watcher.waitFor(
        tenants.map((tenant) => tenant.tenantId),
        spec.timeoutMs,
        () => live.crashed(),
        seen,
      );
      for (const summary of next.values()) seen.add(summary.value.cycleId);
      const outcomes = snapshotOutcomesSince(
        snapshotOutcomes(await live.metrics('vuln-fetcher')),
        outcomesBefore,
      );
      measured.push({ summaries: next, changedDevices, snapshotOutcomes: outcomes });
    }
    const windowMs = Date.now() - windowStart;
    const usageAfter = usageNow();
    const cpuAfter = pick(usageAfter, 'cpuSec');
    clearInterval(cpuSampler);
    cpuSamples.push({ t: windowStart + windowMs, cpuSec: cpuAfter });
    const windowOf = (counter: Counter): Record<string, number> =>
      processCounterGrowth(pick(usageAfter, counter), pick(usageBefore, counter));
    const windowCpuSec = windowOf('cpuSec');
    const windowSystemCpuSec = windowOf('systemCpuSec');
    const windowMinorFaults = windowOf('minorFaults');
    await sleep(500);
    const samples = await sampler.stop();
    sampler = undefined;
    // Peak memory and CPU are read once the work a summary does not wait for is done too.
    const idleMs = await pipeline.idle(IDLE_TIMEOUT_MS);
    ctx.log(
      idleMs === undefined
        ? `  services still busy ${IDLE_TIMEOUT_MS / 1000} s after the last summary; measured anyway`
        : `  services idle ${(idleMs / 1000).toFixed(1)} s after the last summary`,
    );
    const usage = usageAfterIdle(pipeline);
    const sim = await ctx.sim.stats();
    const redisCalls = ctx.privateRedis
      ? commandsCalledSince(await commandStats(ctx.redisUrl), redisBefore)
      : {};
    const redisWindowMs = Date.now() - redisFrom;
    await watcher.close();
    watcher = undefined;
    await ctx.group.stop([...pipeline.children.values()]);
    ctx.log(`  cycles complete after ${((Date.now() - started) / 1000).toFixed(1)} s; reading the topics`);
    const events = await collect(ctx.kafka, topics, `${topicPrefix}bench-read`, warmup?.tenantId);
    const cycleRecords = measured.flatMap(({ summaries, changedDevices, snapshotOutcomes: outcomes }) =>
      tenants.map((tenant) => {
        const record = cycleRecord(tenant, summaries.get(tenant.tenantId) as SummaryRecord, events);
        return changedDevices === undefined
          ? record
          : { ...record, changedDevices, ...(outcomes ? { snapshotOutcomes: outcomes } : {}) };
      }),
    );
    return {
      spec,
      topics,
      cycles: cycleRecords,
      // The fleet once, however many of its cycles were measured (costs are per device of the fleet).
      devices: cycleRecords
        .slice(0, tenants.length)
        .reduce((sum, cycle) => sum + cycle.summary.devices.total, 0),
      sim,
      samples,
      usage,
      windowCpuSec,
      windowSystemCpuSec,
      windowMinorFaults,
      windowMs,
      cpuSamples,
      kafka: events.totals,
      redisCalls,
      redisWindowMs,
      ...(redisIdle ? { redisIdle } : {}),
      deadLetters: events.totals[topics.dlq]?.messages ?? 0,
      durationMs: Date.now() - started,
      idleMs: idleMs ?? null,
      ...(warmupIdleMs === undefined ? {} : { warmupIdleMs }),
    };
  } finally {
    clearInterval(cpuSampler);
    if (sampler) await sampler.stop().catch(() => undefined);
    await watcher?.close().catch(() => undefined);
    await producer.disconnect().catch(() => undefined);
    if (pipeline) await ctx.group.stop([...pipeline.children.values()]);
    await closeRedis(redis);
    // The warm-up tenant too: a tenant left in the simulator keeps its share of the simulator's caches of
    // rendered devices, and a later scenario's export is then rendered while it is read.
    for (const tenant of warmup ? [...tenants, warmup] : tenants)
      await ctx.sim.call('DELETE', `/_sim/tenants/${tenant.azureTenantId}`).catch(() => undefined);
    await deleteTopics(ctx.kafka, Object.values(topics)).catch((error: Error) =>
      ctx.log(`  could not delete topics: ${error.message}`),
    );
    if (ctx.privateRedis) await redisCommand(ctx.redisUrl, 'FLUSHALL').catch(() => undefined);
    else await deleteKeys(ctx.redisUrl, redisPrefix).catch(() => undefined);
  }
}

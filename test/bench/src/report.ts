import { perDeviceRefreshHours, round } from './analysis';
import type { MemorySpeed } from './calibrate';
import {
  SIMULATOR,
  cpuMicrosPerDevice,
  pipelineCpuMicrosPerDevice,
  totalCpuSec,
  withReplicas,
} from './internal-ceiling';
import type { BenchResults, CycleLatency, FleetResult } from './measures';
import { costRowLabel, type CostPerDevice } from './scenario-cost';
import { cycleFault } from './scenario-records';

export {
  INTERNAL,
  cpuMicrosPerDevice,
  internalCeiling,
  internalThroughput,
  pipelineCpuMicrosPerDevice,
  withReplicas,
  type InternalCeiling,
  type InternalRun,
} from './internal-ceiling';
export {
  PER_DEVICE_QUOTA,
  bulkResult,
  cycleFaults,
  cycleLatencies,
  claimedModeHeld,
  cycleMode,
  fleetResult,
  latencyByMode,
  latencyPercentiles,
  peakRssGrowth,
  snapshotOutcomes,
  snapshotOutcomesSince,
  timelineOf,
  type BenchResults,
  type CycleLatency,
  type FleetResult,
  type PeakRssGrowth,
} from './measures';
export { costPerDevice, costRowLabel, shortTopic, usageEach, type CostPerDevice } from './scenario-cost';

/**
 * A process's kernel share of one scenario: its system CPU seconds, their share of its CPU, and its minor
 * page faults per device (each costs 1.3–16 µs of CPU on the build VM, by day); "–" when it was not read.
 */
export function kernelCell(
  cpuSec: number | undefined,
  systemCpuSec: number | undefined,
  minorFaults: number | undefined,
  devices: number,
): string {
  if (cpuSec === undefined || systemCpuSec === undefined || !Number.isFinite(systemCpuSec)) return '–';
  const share = cpuSec > 0 ? ` (${round((systemCpuSec / cpuSec) * 100, 0)} %)` : '';
  const faults =
    minorFaults !== undefined && Number.isFinite(minorFaults) && devices > 0
      ? ` · ${round(minorFaults / devices, 2)}`
      : '';
  return `${round(systemCpuSec, 2)}${share}${faults}`;
}

function ms(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  return value >= 10_000 ? `${(value / 1000).toFixed(1)} s` : `${Math.round(value)} ms`;
}

/** What a p99 over `cycles` cycles is: by nearest rank, under 100 cycles it is their largest. */
function p99Note(cycles: number, long: boolean): string {
  if (cycles === 0 || cycles >= 100) return '';
  return long ? '; under 100, so the largest of them' : '; p99 the largest';
}

/** Said where a per-device fleet ran without the poller (the bench listed the fleet itself). */
const POLLER_NOT_RUN = 'the poller is not run in the per-device fleets; its RSS is measured in the bulk runs';

function verdict(ok: boolean | null): string {
  return ok === null ? '–' : ok ? 'met' : '**missed**';
}

/** A number as read, or "–" where it was not (a process whose usage could not be read is NaN, null in JSON). */
function readCell(value: number | null | undefined): string {
  return typeof value === 'number' && Number.isFinite(value) ? String(value) : '–';
}

/** Cycles with a fault (see cycleFault): the numbers they feed get no verdict. */
function unsound(cycles: readonly CycleLatency[]): number {
  return cycles.filter((cycle) => cycle.completeness && cycleFault(cycle.completeness) !== null).length;
}

/** Said beside a measure fed by `count` unsound cycles. */
function unsoundNote(count: number, of: string): string {
  return count > 0 ? `; **${count} ${of} not sound**, no verdict` : '';
}

/** How long the services took to go idle before their usage was read. */
function idleCell(idleMs: number | null | undefined): string {
  return idleMs === null ? '**still busy**' : ms(idleMs);
}

/** The machine's speed as the report states it: its range over the run, and before each scenario. */
export function calibrationLine(calibration: Omit<BenchResults['machine']['calibration'], 'memory'>): string {
  const timings = [
    ...Object.entries(calibration.beforeScenarioMs).map(([scenario, ms]) => `${ms} ms before ${scenario}`),
    ...(calibration.endMs === null ? [] : [`${calibration.endMs} ms at the end`]),
  ];
  const all = [
    ...Object.values(calibration.beforeScenarioMs),
    ...(calibration.endMs === null ? [] : [calibration.endMs]),
  ];
  const range =
    all.length === 0
      ? 'not measured'
      : `${Math.min(...all)}–${Math.max(...all)} ms (slowest ÷ fastest ${round(Math.max(...all) / Math.min(...all), 2)})`;
  return (
    `Machine speed, by a fixed workload in the bench's own process (${calibration.workload}; median of 5 ` +
    `rounds, lower is faster): ${range}` +
    (timings.length === 0 ? '.' : `; ${timings.join(', ')}.`) +
    ` Compare runs by it before comparing their numbers.`
  );
}

/** The memory's speed as the report states it: each probe's range over the run, and before each scenario. */
export function memoryLine(memory: BenchResults['machine']['calibration']['memory']): string {
  const moments: [string, MemorySpeed][] = [
    ...Object.entries(memory.beforeScenario).map(([scenario, speed]): [string, MemorySpeed] => [
      `before ${scenario}`,
      speed,
    ]),
    ...(memory.end === null ? [] : [['at the end', memory.end] as [string, MemorySpeed]]),
  ];
  const range = (values: number[], unit: string): string =>
    `${Math.min(...values)}–${Math.max(...values)} ${unit}`;
  const measured =
    moments.length === 0
      ? 'not measured.'
      : `a dependent read ${range(
          moments.map(([, speed]) => speed.readNs),
          'ns',
        )}, a fresh page ${range(
          moments.map(([, speed]) => speed.freshPageUs),
          'µs',
        )}; ${moments.map(([when, speed]) => `${speed.readNs} ns · ${speed.freshPageUs} µs ${when}`).join(', ')}.`;
  return `Memory speed, in the same process (${memory.workload}; medians of 3 rounds, lower is faster): ${measured}`;
}

/** The markdown summary next to latest.json. */
export function renderMarkdown(results: BenchResults): string {
  const lines: string[] = [];
  const sizes = Object.keys(results.fleets);
  lines.push(`# Pipeline benchmark — ${results.startedAt}`, '');
  lines.push(
    `${results.machine.cpus} CPUs, Node ${results.machine.node}, Kafka ${results.machine.kafkaBrokers.join(',')}, ${results.machine.redis} Redis; ` +
      `five services as separate processes; the simulator as its own process.`,
    '',
    calibrationLine(results.machine.calibration),
    '',
    memoryLine(results.machine.calibration.memory),
    '',
  );
  lines.push('| measure | value | target | |', '|---|---|---|---|');
  for (const size of sizes) {
    const value = results.slotUtilisation[size] as number;
    const fleet = results.fleets[size] as FleetResult;
    const fault = cycleFault(fleet.completeness);
    lines.push(
      `| slot utilisation, ${Number(size).toLocaleString('en-US')} devices (vuln calls/s ÷ (10 ÷ the configured ${results.options['latencyMs'] as number} ms); at the simulator's measured mean latency ${fleet.meanLatencyMs} ms: ${fleet.slotUtilisationAtMeasuredLatency.toFixed(3)}${fault === null ? '' : `; **cycle not sound: ${fault}**`}) | ${value.toFixed(3)} | ≥ 0.95 | ${verdict(fault === null ? value >= 0.95 : null)} |`,
    );
  }
  const p99 = results.publishLatencyP99Ms;
  const counted = results.publishLatencyCycleCount;
  const unsoundCycles = unsound(results.publishLatencyCycles);
  lines.push(`| last vuln response → vms.risk-summary p50 | ${ms(results.publishLatencyP50Ms)} | | |`);
  lines.push(
    `| last vuln response → vms.risk-summary p99 (${counted} cycles${p99Note(counted, true)}${unsoundNote(unsoundCycles, 'cycles')}) | ${ms(p99)} | ≤ 2 s | ${verdict(p99 === null || unsoundCycles > 0 ? null : p99 <= 2000)} |`,
  );
  for (const [mode, latency] of Object.entries(results.publishLatencyByMode)) {
    const unsoundOfMode = unsound(results.publishLatencyCycles.filter((cycle) => cycle.mode === mode));
    lines.push(
      `| … ${mode} cycles only (${latency.cycles}${p99Note(latency.cycles, false)}${unsoundNote(unsoundOfMode, 'cycles')}): p50 / p99 | ${ms(latency.p50Ms)} / ${ms(latency.p99Ms)} | ≤ 2 s | ${verdict(latency.p99Ms === null || unsoundOfMode > 0 ? null : latency.p99Ms <= 2000)} |`,
    );
  }
  const internal = results.internal;
  const runs =
    internal && internal.runs.length > 1
      ? `; median of ${internal.runs.length} runs, ${internal.devicesPerSecMin}–${internal.devicesPerSecMax}`
      : '';
  const warm = internal?.warmupDevices ? `, after a warm-up cycle of ${internal.warmupDevices} devices` : '';
  const unsoundRuns = internal?.unsoundRuns ?? 0;
  lines.push(
    `| internal ceiling (devices/s, latency 0${warm}${runs}${unsoundNote(unsoundRuns, 'runs')}) | ${internal?.devicesPerSec ?? '–'} | ≥ 10,000 | ${verdict(internal === null || unsoundRuns > 0 ? null : internal.devicesPerSec >= 10_000)} |`,
  );
  if (internal) {
    lines.push(
      `| … CPU per device of that run: all processes / without the simulator | ${internal.cpuMicrosPerDevice} / ${internal.pipelineCpuMicrosPerDevice} µs | under 200 µs for 10,000/s on 2 cores | |`,
    );
  }
  for (const size of sizes) {
    const rss = results.peakRssMbByService[size] ?? {};
    // NaN when a service was not read, -Infinity when none was: the largest is then not known.
    const max = Math.max(...Object.values(rss));
    const known = Number.isFinite(max);
    const largest = known ? Object.keys(rss).find((service) => rss[service] === max) : undefined;
    const notes = [
      ...(largest ? [`the ${largest}`] : []),
      ...(rss['poller'] === undefined ? [POLLER_NOT_RUN] : []),
    ];
    lines.push(
      `| largest peak RSS, ${Number(size).toLocaleString('en-US')} devices${notes.length > 0 ? ` (${notes.join('; ')})` : ''} | ${known ? `${round(max)} MB` : '–'} | ≤ 300 MB at 100k, flat | ${Number(size) >= 100_000 ? verdict(known ? max <= 300 : null) : ''} |`,
    );
  }
  const growth = results.peakRssGrowth;
  if (growth) {
    const devices = (n: number): string => n.toLocaleString('en-US');
    lines.push(
      `| peak RSS growth, ${devices(growth.fromDevices)} → ${devices(growth.toDevices)} devices (${growth.service}, the largest at ${devices(growth.toDevices)}) | ${growth.ratio}× (${round(growth.fromMb)} → ${round(growth.toMb)} MB) | flat | |`,
    );
  }
  lines.push(
    `| per-device refresh of 100,000 devices under Microsoft's quotas | ${round(results.quotas.perDeviceRefreshHours100k, 1)} h | computed (${results.quotas.perDeviceCallsPerHour} calls/h binding) | |`,
  );
  if (results.quotas.bulk) {
    const bulk = results.quotas.bulk as {
      cycleMs: number;
      devices: number;
      bulkCalls: number;
      throttled: number;
      fault?: string | null;
    };
    const fault = bulk.fault ?? null;
    lines.push(
      `| bulk export refresh of ${bulk.devices.toLocaleString('en-US')} devices, quotas on | ${ms(bulk.cycleMs)} | measured (${bulk.bulkCalls} bulk calls, ${bulk.throttled} throttled${fault === null ? '' : `; **cycle not sound: ${fault}**`}) | ${fault === null ? '' : '–'} |`,
    );
  }
  lines.push('');
  if (sizes.length > 0) {
    lines.push('## Fleets (one tenant, per-device calls, simulator quotas off)', '');
    lines.push(
      '| devices | vuln calls | calls/s | mean latency at the simulator | ceiling/s (10 ÷ configured latency) | utilisation | … at the measured latency (diagnostic) | mean in flight | peak concurrency | cycle | listing | collect → VMS | dead letters |',
    );
    lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const size of sizes) {
      const fleet = results.fleets[size] as FleetResult;
      lines.push(
        `| ${fleet.devices} | ${fleet.vulnerabilityCalls} | ${fleet.callsPerSec} | ${fleet.meanLatencyMs} ms | ${fleet.ceilingPerSec} | ${fleet.slotUtilisation} | ${fleet.slotUtilisationAtMeasuredLatency} | ${fleet.meanInFlight} | ${fleet.peakConcurrency} | ${ms(fleet.cycleMs)} | ${ms(fleet.listMs)} | ${ms(fleet.collectToVmsMs)} | ${fleet.deadLetters} |`,
      );
    }
    lines.push('', '### Peak RSS (MB) and CPU (s) per service', '');
    const services = [
      ...new Set(sizes.flatMap((size) => Object.keys((results.fleets[size] as FleetResult).peakRssMb))),
    ];
    lines.push(`| devices | ${services.join(' | ')} |`, `|---|${services.map(() => '---').join('|')}|`);
    for (const size of sizes) {
      const fleet = results.fleets[size] as FleetResult;
      lines.push(
        `| ${size} | ${services.map((name) => `${readCell(fleet.peakRssMb[name])} MB / ${readCell(fleet.cpuSec[name])} s`).join(' | ')} |`,
      );
    }
    if (!services.includes('poller')) lines.push('', `No poller column: ${POLLER_NOT_RUN}.`);
  }
  const costs = Object.entries(results.costPerDevice);
  if (costs.length > 0) {
    lines.push('', '## Cost per device', '');
    lines.push(
      '| scenario | Kafka messages | Kafka bytes (key+value) | Redis commands (background removed) | … raw (diagnostic) | background commands/s | top Redis commands per device (raw) |',
      '|---|---|---|---|---|---|---|',
    );
    for (const [name, cost] of costs) {
      const top = Object.entries(cost.redisTopCommands)
        .slice(0, 6)
        .map(([command, calls]) => `${command} ${calls}`)
        .join(', ');
      lines.push(
        `| ${costRowLabel(name, cost)} | ${cost.kafkaMessages} | ${cost.kafkaBytes} | ${cost.redisCommands ?? 'n/a (shared Redis)'} | ${cost.redisCommandsRaw ?? '–'} | ${cost.redisIdleCommandsPerSec ?? '–'} | ${top} |`,
      );
    }
    lines.push(
      '',
      'Redis commands per device leave out the background (each service PINGs Redis every 5 s, the call limiter ' +
        'reconciles every 5 s): its rate over an idle interval before the scenario, with the same processes ' +
        'running, times the counting window. The raw figure keeps it, so it falls as fleets grow. Rows ' +
        '"without the poller" were driven by the bench: they leave out the poller\'s Redis commands and ' +
        "Defender listing calls, and count the bench's own cycle bookkeeping (`cycles.begin`, `cycles.listed`).",
    );
    const [firstName, first] = costs[0] as [string, CostPerDevice];
    lines.push('', `Bytes per device by topic (${firstName}):`, '');
    lines.push('| topic | messages/device | bytes/device |', '|---|---|---|');
    for (const [topic, cost] of Object.entries(first.byTopic))
      lines.push(`| ${topic} | ${cost.messages} | ${cost.bytes} |`);
  }
  const scenarios = Object.entries(results.scenarios);
  if (scenarios.length > 0) {
    const services = withReplicas(
      ['registrar', 'poller', 'vuln-fetcher', 'scorer', 'publisher'],
      scenarios.flatMap(([, scenario]) => Object.keys(scenario.peakRssMb)),
    );
    lines.push(
      '',
      '## Peak RSS (MB) / CPU (s) per scenario',
      '',
      'Read once the services went idle after the last summary ("idle after"; **still busy**: not within ' +
        '120 s, read anyway). "–": not run, or its usage could not be read.',
      '',
      `| scenario | devices | idle after | ${services.join(' | ')} |`,
      `|---|---|---|${services.map(() => '---').join('|')}|`,
    );
    for (const [name, scenario] of scenarios) {
      const warmup =
        scenario.warmupIdleMs === undefined ? '' : ` (warm-up: ${idleCell(scenario.warmupIdleMs)})`;
      lines.push(
        `| ${name} | ${scenario.devices} | ${idleCell(scenario.idleMs)}${warmup} | ${services.map((service) => (scenario.peakRssMb[service] === undefined ? '–' : `${readCell(scenario.peakRssMb[service])} / ${readCell(scenario.cpuSec[service])}`)).join(' | ')} |`,
      );
    }
    const processes = [...services, 'kafka', 'redis', SIMULATOR];
    lines.push(
      '',
      '## Where the two cores went: CPU (s) from the first registration to the last summary',
      '',
      `| scenario | window | ${processes.join(' | ')} | all | of 2 cores | µs per device | … without the simulator |`,
      `|---|---|${processes.map(() => '---').join('|')}|---|---|---|---|`,
    );
    for (const [name, scenario] of scenarios) {
      const cpu = scenario.windowCpuSec;
      const all = totalCpuSec(cpu);
      const share = scenario.windowMs > 0 ? all / ((scenario.windowMs / 1000) * 2) : NaN;
      lines.push(
        `| ${name} | ${ms(scenario.windowMs)} | ${processes.map((process) => cpu[process] ?? '–').join(' | ')} | ${round(all, 1)} | ${round(share * 100, 0)} % | ${round(cpuMicrosPerDevice(cpu, scenario.devices))} | ${round(pipelineCpuMicrosPerDevice(cpu, scenario.devices))} |`,
      );
    }
    lines.push(
      '',
      '## … of it in the kernel: system CPU (s, share of the process) · minor page faults per device',
      '',
      `| scenario | ${processes.join(' | ')} |`,
      `|---|${processes.map(() => '---').join('|')}|`,
    );
    for (const [name, scenario] of scenarios) {
      const cells = processes.map((process) =>
        kernelCell(
          scenario.windowCpuSec[process],
          scenario.windowSystemCpuSec[process],
          scenario.windowMinorFaults[process],
          scenario.devices,
        ),
      );
      lines.push(`| ${name} | ${cells.join(' | ')} |`);
    }
  }
  if (results.publishLatencyCycles.length > 0) {
    lines.push(
      '',
      '## Cycles (collect → VMS)',
      '',
      '| scenario | tenant | mode | devices | cycle | last vuln response → summary | status | incomplete | failed | without vulnerabilities (fetch failed) |',
      '|---|---|---|---|---|---|---|---|---|---|',
    );
    for (const cycle of results.publishLatencyCycles) {
      const counts = cycle.completeness;
      const status = counts
        ? `${counts.status === 'partial' ? '**partial**' : counts.status} | ${counts.incomplete} | ${counts.failed} | ${counts.unfetched}`
        : '– | – | – | –';
      lines.push(
        `| ${cycle.scenario} | ${cycle.tenantId} | ${cycle.mode}${cycle.asClaimed === false ? ' (**not as claimed**)' : ''} | ${cycle.devices} | ${ms(cycle.cycleMs)} | ${ms(cycle.collectToVmsMs)} | ${status} |`,
      );
    }
    lines.push(
      '',
      'Incomplete devices lack a signal: in a sound cycle only those the device list leaves unknown or ' +
        'absent, excluded devices and those Defender does not assess. A partial cycle, a failed device or a ' +
        'device without its vulnerabilities (fetch failed) makes the cycle unsound: an error of the run, and ' +
        'no verdict on the measures it feeds.',
    );
    const otherwise = results.publishLatencyCycles.filter((cycle) => cycle.asClaimed === false);
    if (otherwise.length > 0)
      lines.push(
        '',
        ...otherwise.map(
          (cycle) =>
            `Not as claimed: ${cycle.scenario}'s ${cycle.mode} cycle of ${cycle.tenantId} found Microsoft's export snapshot ` +
            `${
              Object.entries(cycle.snapshotOutcomes ?? {})
                .map(([outcome, count]) => `${outcome} ×${count}`)
                .join(', ') || 'not asked about at all'
            } (vuln-fetcher's \`urs_bulk_export_snapshots_total\`); its latency counts under ${cycle.mode} all the same.`,
        ),
      );
  }
  if (results.internal)
    lines.push('', '## Internal ceiling', '', '```json', JSON.stringify(results.internal, null, 2), '```');
  if (results.quotas.bulk)
    lines.push(
      '',
      '## Bulk export under quotas',
      '',
      '```json',
      JSON.stringify(results.quotas.bulk, null, 2),
      '```',
    );
  if (results.errors.length > 0)
    lines.push(
      '',
      '## Errors',
      '',
      ...results.errors.map((error) => `- ${error.replace(/\n/g, ' ').slice(0, 600)}`),
    );
  lines.push('');
  return lines.join('\n');
}

export { perDeviceRefreshHours };

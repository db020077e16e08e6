import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BULK_NEXT_UNIT_MS, bulkNextUnitMs, type BenchOptions } from './args';
import { INTERNAL } from './report';
import type { ScenarioSpec } from './scenario';

/**
 * Variables that take Microsoft's quotas out of the services' own client-side quota gate, for the
 * scenarios that measure the call slots with the simulator's quotas off (per-device calls at 50/min
 * would otherwise make the slots idle by design).
 */
const QUOTAS_OFF_ENV: Record<string, string> = { URS_DEFENDER_QUOTAS: 'off' };

/** Per-device calls for a fleet are planned by the poller against the poll interval; a day lets 28,800 devices fit. */
const LONG_INTERVAL_MINUTES = 1440;

function pollerAvailable(root: string): boolean {
  const main = join(root, 'services/poller/dist/main.js');
  return existsSync(main) && readFileSync(main, 'utf8').includes('runService');
}

/** The scenarios a run measures, in order; `root` is the repository's, where the poller's build is looked for. */
export function scenarioSpecs(options: BenchOptions, root: string): ScenarioSpec[] {
  const realPoller = options.driver === 'poller' || (options.driver === 'auto' && pollerAvailable(root));
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

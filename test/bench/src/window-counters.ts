// How the counters read at both ends of a scenario's measured window grew (see scenario.ts): each process's
// CPU and page faults, and Redis's commands.
import type { ProcessUsage } from './procstat';

/**
 * The Redis commands called since `before` (INFO commandstats): a command not called before counts from 0, and
 * one whose count fell (its stats were reset) is left out rather than counted negative.
 */
export function commandsCalledSince(
  after: Record<string, number>,
  before: Record<string, number>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [command, calls] of Object.entries(after)) {
    const delta = calls - (before[command] ?? 0);
    if (delta > 0) out[command] = delta;
  }
  return out;
}

/** The counters of a process that grow over a window. */
export type Counter = 'cpuSec' | 'systemCpuSec' | 'minorFaults';

/** One counter of every process (NaN for a process that could not be read). */
export function pick(usage: Record<string, ProcessUsage | null>, counter: Counter): Record<string, number> {
  return Object.fromEntries(Object.entries(usage).map(([name, one]) => [name, one?.[counter] ?? NaN]));
}

/**
 * How much each process's counter grew (NaN when it was not read at both ends: unlike Redis commands, a
 * process that could not be read is unknown, not idle).
 */
export function processCounterGrowth(
  after: Record<string, number>,
  before: Record<string, number>,
): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after).map(([name, value]) => [name, value - (before[name] ?? NaN)]),
  );
}

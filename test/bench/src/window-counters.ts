// How the counters read at both ends of a scenario's measured window grew (see scenario.ts): each process's
// CPU and page faults, Redis's commands, and the vuln-fetcher's export snapshot outcomes.
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

/** `urs_bulk_export_snapshots_total` by outcome, summed over the /metrics texts of the vuln-fetcher's processes. */
export function snapshotOutcomes(metricsTexts: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const text of metricsTexts)
    for (const line of text.split('\n')) {
      const match = /^urs_bulk_export_snapshots_total\{[^}]*outcome="([^"]+)"[^}]*\}\s+(\S+)/.exec(line);
      const value = Number(match?.[2]);
      if (match && Number.isFinite(value)) out[match[1] as string] = (out[match[1] as string] ?? 0) + value;
    }
  return out;
}

/** The outcomes that grew since `before`. */
export function snapshotOutcomesSince(
  after: Record<string, number>,
  before: Record<string, number>,
): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after)
      .map(([outcome, count]): [string, number] => [outcome, count - (before[outcome] ?? 0)])
      .filter(([, grew]) => grew > 0),
  );
}

// What a scenario cost (see report.ts): each process's peak RSS and CPU over it, and per device its Kafka
// messages and bytes and its Redis commands (less the background's, measured while idle).
import { round } from './analysis';
import type { ScenarioResult } from './scenario';

export interface CostPerDevice {
  kafkaMessages: number;
  kafkaBytes: number;
  byTopic: Record<string, { messages: number; bytes: number }>;
  /**
   * Redis commands per device, with the background's removed: the idle rate (`redisIdleCommandsPerSec`)
   * times the counting window, taken off the window's commands before dividing (never below 0). Without an
   * idle rate, the raw figure. Null with a shared Redis: other users' commands would be counted.
   */
  redisCommands: number | null;
  /**
   * Diagnostic: every command of the counting window per device, the background's included (each service's
   * health PING and the call limiter's reconciliation every 5 s), so it falls as fleets grow.
   */
  redisCommandsRaw: number | null;
  /**
   * Redis commands per second of the same processes over an idle interval before the scenario's tenants were
   * registered: the fixed part, whatever the fleet. Null when not measured (a shared Redis, or older results).
   */
  redisIdleCommandsPerSec: number | null;
  /** Top commands per device, raw (the background's included). */
  redisTopCommands: Record<string, number>;
  /**
   * Whether the real poller listed the fleet. Without it (the bench's inject driver) the costs leave out the
   * poller's Redis commands and Defender listing calls, and include the bench's own cycle bookkeeping
   * (`cycles.begin` / `cycles.listed`).
   */
  withPoller: boolean;
}

/** A cost row's name: a scenario run without the poller says so (see `CostPerDevice.withPoller`). */
export function costRowLabel(name: string, cost: Pick<CostPerDevice, 'withPoller'>): string {
  return cost.withPoller ? name : `${name} (without the poller)`;
}

/** How each whole-run counter is rounded in the results: peak RSS to 0.1 MB, CPU to 10 ms. */
const USAGE_DIGITS = { peakRssMb: 1, cpuSec: 2 } as const;

/** Each process's `counter` over the whole scenario (peak RSS in MB, or CPU in seconds), rounded. */
export function usageEach(
  result: Pick<ScenarioResult, 'usage'>,
  counter: keyof typeof USAGE_DIGITS,
): Record<string, number> {
  return Object.fromEntries(
    Object.entries(result.usage).map(([name, usage]) => [name, round(usage[counter], USAGE_DIGITS[counter])]),
  );
}

/** `bench-<run>-<scenario>-urs.device-batches` → `urs.device-batches`. */
export function shortTopic(topic: string): string {
  return /(urs|vms)\.[a-z-]+$/.exec(topic)?.[0] ?? topic;
}

export function costPerDevice(result: ScenarioResult, privateRedis: boolean): CostPerDevice {
  const devices = Math.max(1, result.devices);
  const byTopic: CostPerDevice['byTopic'] = {};
  let messages = 0;
  let bytes = 0;
  for (const [topic, totals] of Object.entries(result.kafka)) {
    messages += totals.messages;
    bytes += totals.bytes;
    byTopic[shortTopic(topic)] = {
      messages: round(totals.messages / devices, 4),
      bytes: round(totals.bytes / devices, 1),
    };
  }
  const redisTotal = Object.values(result.redisCalls).reduce((sum, calls) => sum + calls, 0);
  const idle = result.redisIdle;
  const idlePerSec = privateRedis && idle && idle.ms > 0 ? idle.commands / (idle.ms / 1000) : null;
  const background = idlePerSec === null ? 0 : idlePerSec * ((result.redisWindowMs ?? 0) / 1000);
  const top = Object.entries(result.redisCalls)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 10);
  return {
    kafkaMessages: round(messages / devices, 3),
    kafkaBytes: round(bytes / devices, 0),
    byTopic,
    redisCommands: privateRedis ? round(Math.max(0, redisTotal - background) / devices, 2) : null,
    redisCommandsRaw: privateRedis ? round(redisTotal / devices, 2) : null,
    redisIdleCommandsPerSec: idlePerSec === null ? null : round(idlePerSec, 2),
    redisTopCommands: Object.fromEntries(top.map(([command, calls]) => [command, round(calls / devices, 3)])),
    withPoller: result.spec.driver === 'poller',
  };
}

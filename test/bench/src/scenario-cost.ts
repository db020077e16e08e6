// What a scenario cost (see report.ts): each process's peak RSS and CPU over it, and per device its Kafka
// messages and bytes and its Redis commands.
import { round } from './analysis';
import type { ScenarioResult } from './scenario';

export interface CostPerDevice {
  kafkaMessages: number;
  kafkaBytes: number;
  byTopic: Record<string, { messages: number; bytes: number }>;
  /** Redis commands per device (null with a shared Redis: other users' commands would be counted). */
  redisCommands: number | null;
  redisTopCommands: Record<string, number>;
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
  const top = Object.entries(result.redisCalls)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 10);
  return {
    kafkaMessages: round(messages / devices, 3),
    kafkaBytes: round(bytes / devices, 0),
    byTopic,
    redisCommands: privateRedis ? round(redisTotal / devices, 2) : null,
    redisTopCommands: Object.fromEntries(top.map(([command, calls]) => [command, round(calls / devices, 3)])),
  };
}

// What the global setup started, kept in the jest main process for the global teardown.
import type { StartedTestContainer } from 'testcontainers';

export interface ResolvedInfra {
  source: 'containers' | 'stack';
  /** Comma-separated host:port list, when this run resolved Kafka. */
  kafkaBrokers?: string;
  /** redis:// URL, when this run resolved Redis. */
  redisUrl?: string;
  /** Containers to stop at the end of the run (empty for the local stack, which is left running). */
  containers: StartedTestContainer[];
}

const KEY = Symbol.for('urs.test.infra');

type Holder = { [KEY]?: ResolvedInfra[] };

export function setInfra(infra: ResolvedInfra): void {
  const holder = globalThis as Holder;
  (holder[KEY] ??= []).push(infra);
}

export function takeInfra(): ResolvedInfra[] {
  const holder = globalThis as Holder;
  const all = holder[KEY] ?? [];
  holder[KEY] = [];
  return all;
}

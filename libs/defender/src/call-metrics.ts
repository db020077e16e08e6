import type { Registry } from '@urs/telemetry';
import { type DegradedCalls, processDegradedCalls } from './degraded-calls';
import { MICROSOFT_QUOTAS, type DefenderEndpointClass } from './quota';

/** Buckets of the waits before a call, in seconds: a tenant out of its hourly quota may wait most of an hour. */
const WAIT_BUCKETS = [0.001, 0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600];

/** What the API caller tells about its calls: labels are the endpoint and the status, never a tenant or a token. */
export interface CallMetrics {
  /** A call ended: its HTTP status, or `error` when no answer could be read (network, timeout, bad body). */
  called(endpoint: DefenderEndpointClass, status: number | 'error', seconds: number): void;
  /** A call was not sent: its tenant's calls are held back after failing in a row (CallHealth). */
  heldBack(endpoint: DefenderEndpointClass): void;
  /** A call is sent after waiting `quotaSeconds` for its tenant's quota, then `slotSeconds` for a slot. */
  waited(endpoint: DefenderEndpointClass, quotaSeconds: number, slotSeconds: number): void;
}

/**
 * `urs_defender_calls_total{endpoint,status}`, `urs_defender_call_seconds{endpoint}` and
 * `urs_defender_wait_seconds{endpoint,for}` in `registry` (shared by every client of the process): whether
 * Microsoft throttles (status 429), how fast it answers, and whether calls queue for the tenants' quotas
 * (`for="quota"`, which includes a 429's Retry-After) or for the 10 shared slots (`for="slot"`). With them,
 * the gauges of `degradedCalls` (the process's own by default): `urs_defender_degraded_tenants`,
 * `urs_defender_degraded_calls_running`, `…_waiting` and `…_max`, of this process (the shared limiter serves
 * the install's, `urs_defender_degraded_slots_*`).
 */
export function createCallMetrics(
  registry: Registry,
  degradedCalls: DegradedCalls = processDegradedCalls,
): CallMetrics {
  registry.gauge(
    'urs_defender_degraded_tenants',
    "Tenants of this process whose last Defender API call failed slowly (degraded) and that have calls in flight or waiting for one of the degraded tenants' places.",
    () => degradedCalls.tenants(),
  );
  registry.gauge(
    'urs_defender_degraded_calls_running',
    "Calls of this process's degraded tenants in flight, all of them together (at most urs_defender_degraded_calls_max); per process, urs_defender_degraded_slots_running counts the install's.",
    () => degradedCalls.running(),
  );
  registry.gauge(
    'urs_defender_degraded_calls_waiting',
    "Calls of this process's degraded tenants waiting for one of this process's places for them before they ask for an install-wide place (urs_defender_degraded_slots_waiting) and a shared slot.",
    () => degradedCalls.waitingCalls(),
  );
  registry.gauge(
    'urs_defender_degraded_calls_max',
    "The places this process keeps for its degraded tenants' calls in flight, all of them together; the install has as many (urs_defender_degraded_slots_max) for every process's.",
    () => degradedCalls.limit,
  );
  const calls = registry.counter(
    'urs_defender_calls_total',
    "Defender API calls, by endpoint (machines, vulnerabilities, bulk, exportFiles) and HTTP status (error: no answer read; held-back: not sent, the tenant's calls failed too often in a row).",
  );
  const seconds = registry.histogram(
    'urs_defender_call_seconds',
    'Defender API calls from sending to the whole answer, in seconds, by endpoint.',
  );
  const waits = registry.histogram(
    'urs_defender_wait_seconds',
    "Time a Defender API call waited before it was sent, in seconds, by endpoint and for what (quota: the tenant's quota or a 429's Retry-After; slot: one of the shared calls in flight).",
    WAIT_BUCKETS,
  );
  // Served at 0 from the start: a process's first hold-back of an endpoint would otherwise bring its series
  // with it, and increase() (UrsDefenderCallsHeldBack) counts nothing before a series' first sample.
  for (const endpoint of Object.keys(MICROSOFT_QUOTAS)) calls.init({ endpoint, status: 'held-back' });
  return {
    called(endpoint, status, took) {
      calls.inc({ endpoint, status: String(status) });
      seconds.observe(took, { endpoint });
    },
    heldBack(endpoint) {
      calls.inc({ endpoint, status: 'held-back' });
    },
    waited(endpoint, quotaSeconds, slotSeconds) {
      waits.observe(quotaSeconds, { endpoint, for: 'quota' });
      waits.observe(slotSeconds, { endpoint, for: 'slot' });
    },
  };
}

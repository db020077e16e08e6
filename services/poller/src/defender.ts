import type { Agent } from 'node:https';
import type { Machine } from '@urs/contracts';
import {
  createDefenderClient,
  DefenderErrorCode,
  isSetupErrorCode,
  planVulnerabilityMode,
  type CallLimiter,
  type DefenderEndpointOverrides,
  type QuotaGate,
} from '@urs/defender';
import type { Logger } from '@urs/logging';
import type { Registry } from '@urs/telemetry';

export { DefenderErrorCode, isSetupErrorCode };

/** A tenant's credentials, the secret in clear (only in this process's memory, only for the cycle). */
export interface TenantCredentials {
  azureTenantId: string;
  clientId: string;
  clientSecret: string;
  cloud: string;
  region: string | null;
}

/** One page of a tenant's device listing, as the poller needs it. */
export interface DevicePage {
  devices: { machine: Machine; merged: boolean }[];
}

/** What a cycle needs of Microsoft: the device pages (the client gets and caches the token). */
export interface TenantDefender {
  listDevicePages(signal: AbortSignal): AsyncIterable<DevicePage>;
  close(): void;
}

export interface DefenderGateway {
  forTenant(credentials: TenantCredentials): TenantDefender;
  /** Per-device vulnerability calls when the fleet fits the interval within the quota, else the bulk export. */
  planMode(
    deviceCount: number,
    pollIntervalMinutes: number,
  ): { mode: 'per-device' | 'bulk'; perDeviceCapacity: number };
}

export interface DefenderGatewayDeps {
  limiter: CallLimiter;
  quota: QuotaGate;
  logger: Logger;
  overrides: DefenderEndpointOverrides;
  httpsAgent: Agent;
  /** The process's registry: the calls are counted there (`urs_defender_*`). */
  metrics: Registry;
  /** How long a call may go without an answer, in milliseconds (`URS_DEFENDER_REQUEST_TIMEOUT_MS`). */
  requestTimeoutMs?: number;
}

/** The gateway over @urs/defender: one client per tenant, sharing the call slots, the quota gate and the agent. */
export function createDefenderGateway(deps: DefenderGatewayDeps): DefenderGateway {
  return {
    forTenant(credentials) {
      const { region, ...rest } = credentials;
      const client = createDefenderClient(region === null ? rest : { ...rest, region }, {
        limiter: deps.limiter,
        quota: deps.quota,
        logger: deps.logger,
        overrides: deps.overrides,
        httpsAgent: deps.httpsAgent,
        metrics: deps.metrics,
        ...(deps.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: deps.requestTimeoutMs }),
      });
      return {
        async *listDevicePages(signal) {
          for await (const page of client.listMachinePages({ signal })) {
            yield {
              devices: page.machines.map((entry) => ({
                machine: entry.record as unknown as Machine,
                merged: entry.flags.merged,
              })),
            };
          }
        },
        close: () => client.close(),
      };
    },
    planMode: (deviceCount, pollIntervalMinutes) => planVulnerabilityMode(deviceCount, pollIntervalMinutes),
  };
}

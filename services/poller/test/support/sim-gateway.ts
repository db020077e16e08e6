import type { Agent } from 'node:https';
import { createLocalQuotaGate, type CallLimiter } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import type { Simulator } from '@urs/simulator';
import { Registry } from '@urs/telemetry';
import { createDefenderGateway, type DefenderGateway, type DefenderGatewayDeps } from '../../src/defender';

/**
 * The poller's Defender gateway against the simulator `sim` (its CA trusted by `agent`), calling under
 * `limiter`: a quota gate of its own, a silent logger and a registry of its own, unless `deps` says otherwise.
 */
export function simGateway(
  sim: Simulator,
  agent: Agent,
  limiter: CallLimiter,
  deps: Partial<DefenderGatewayDeps> = {},
): DefenderGateway {
  return createDefenderGateway({
    limiter,
    quota: createLocalQuotaGate(),
    logger: silentLogger,
    overrides: { authorityHost: sim.baseUrl, apiBase: sim.baseUrl },
    httpsAgent: agent,
    metrics: new Registry(),
    ...deps,
  });
}

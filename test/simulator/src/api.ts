import type { FaultSpec, SimStats, TenantSpec } from './state';
import type { MachineRecord, VulnerabilityRecord } from './types';

export interface LatencySpec {
  /** Mean added delay per request, in milliseconds. */
  meanMs: number;
  /** Uniform spread around the mean (± jitterMs), in milliseconds. Default 0. */
  jitterMs?: number;
}

export interface SimulatorOptions {
  /** TCP port; 0 picks an ephemeral one. Default 0. */
  port?: number;
  /** Interface to listen on. Default 127.0.0.1. */
  host?: string;
  /**
   * The URL clients reach the simulator by when it is not `https://<host>:<port>` (in a container network,
   * `https://sim:8443`): the links in its answers (OpenID metadata, `@odata.nextLink`, export file URLs) name
   * it, and the server certificate names its host. `https://` and a host, with an optional port, nothing
   * more. Default `https://<host>:<port>`.
   */
  publicUrl?: string;
  /** Directory where `ca.pem` is written. Default: a fresh temp directory. */
  caDir?: string;
  /**
   * Directory where the CA's key, `ca-key.pem`, is written: apart from `caDir` when clients read that one (a
   * volume the Docker stages mount), so that they get the certificate to trust and never the key that would
   * sign any certificate they trust. Default: `caDir`.
   */
  caKeyDir?: string;
  /** `expires_in` of issued tokens, in seconds. Default 3599 (Entra's one hour). */
  tokenLifetimeSec?: number;
  /** Delay added to every Entra/MDE answer. Default none. */
  latency?: LatencySpec;
  /** Enforce Microsoft's quotas, per app and tenant (429 + Retry-After). Default true. */
  quotas?: boolean;
  /**
   * Length of the quotas' per-minute window, in milliseconds (the hourly one stays an hour): shorter for
   * a test that draws a 429 and should not wait a minute for its Retry-After. Default 60000.
   */
  quotaMinuteMs?: number;
  /** Seed of fault rolls and latency jitter (fleets have their own seeds). Default 1. */
  seed?: number;
  /**
   * Generated device records kept serialised across all tenants, to make repeated listings cheap
   * (~1.3 KB of memory each). Default 250,000; 0 disables the cache.
   */
  recordCacheSize?: number;
  /**
   * Generated devices whose SoftwareVulnerabilitiesByMachine rows are kept rendered, across all
   * tenants (~5.5 KB of memory each). They are rendered when the tenant is added, with its device
   * records (see recordCacheSize): the data is there before anyone asks, as at Microsoft, and the
   * simulator no longer spends the shared CPU on it while a client reads. Default 100,000; 0 disables.
   */
  exportCacheSize?: number;
}

export interface Simulator {
  /** What clients call it by: SimulatorOptions.publicUrl, else `https://<host>:<port>`. */
  readonly baseUrl: string;
  readonly port: number;
  readonly caPem: string;
  readonly caFile: string;
  addTenant(spec: TenantSpec): void;
  removeTenant(azureTenantId: string): boolean;
  setFaults(azureTenantId: string, faults: FaultSpec): void;
  setLatency(latency: LatencySpec): void;
  setQuotas(enabled: boolean): void;
  setTokenLifetime(seconds: number): void;
  updateMachine(azureTenantId: string, machineId: string, patch: Partial<MachineRecord>): void;
  removeMachine(azureTenantId: string, machineId: string): void;
  /** Adds `count` generated devices, or the given records; returns the new ids. */
  addMachines(azureTenantId: string, countOrRecords: number | MachineRecord[]): string[];
  setVulnerabilities(azureTenantId: string, machineId: string, vulns: VulnerabilityRecord[]): void;
  /**
   * Generates the tenant's export snapshot now, with the changes `fleet.exportSnapshotMs` was holding back
   * (as Microsoft's next regeneration would); returns its generation time (epoch ms). A fleet with nothing
   * held back keeps its snapshot.
   */
  generateExport(azureTenantId: string): number;
  machines(azureTenantId: string): MachineRecord[];
  machineCount(azureTenantId: string): number;
  vulnerabilities(azureTenantId: string, machineId: string): VulnerabilityRecord[];
  stats(): SimStats;
  resetStats(): void;
  close(): Promise<void>;
}

export function validateLatency(latency: LatencySpec): LatencySpec {
  if (typeof latency.meanMs !== 'number' || !(latency.meanMs >= 0))
    throw new Error(`latency.meanMs must be a number >= 0, got ${String(latency.meanMs)}`);
  const jitter = latency.jitterMs ?? 0;
  if (typeof jitter !== 'number' || !(jitter >= 0))
    throw new Error(`latency.jitterMs must be a number >= 0, got ${String(jitter)}`);
  return { meanMs: latency.meanMs, jitterMs: jitter };
}

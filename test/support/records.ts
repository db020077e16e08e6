import type { ScoreBatch, ScoredDevice, TenantRecord } from '@urs/contracts';
import type { TestRedis } from './redis';
import { uniqueId } from './wait';

export interface TenantRecordOptions {
  /** Default 1. */
  revision?: number;
  /** Default `director`. */
  source?: TenantRecord['source'];
  /** Default 60. */
  pollIntervalMinutes?: number;
  /** Default now. */
  updatedAt?: string;
  /** Default none (the default profile). */
  riskProfile?: Record<string, unknown> | null;
}

/**
 * A valid, enabled tenant record of the commercial cloud, updated now. Its sealed secret is a
 * placeholder no key opens: tests of transport and storage never open it.
 */
export function tenantRecord(tenantId: string, options: TenantRecordOptions = {}): TenantRecord {
  return {
    schemaVersion: 1,
    tenantId,
    revision: options.revision ?? 1,
    updatedAt: options.updatedAt ?? new Date().toISOString(),
    source: options.source ?? 'director',
    enabled: true,
    defender: {
      azureTenantId: '8f2a3c1e-4b5d-4e6f-9a7b-0c1d2e3f4a5b',
      clientId: '1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9',
      clientSecret: { alg: 'A256GCM', keyId: 'k1', iv: 'aXY=', tag: 'dGFn', ciphertext: 'Y2lwaGVy' },
      pollIntervalMinutes: options.pollIntervalMinutes ?? 60,
      cloud: 'commercial',
      region: null,
      riskProfile: options.riskProfile ?? null,
    },
  };
}

/** An app of an Entra tenant, as a registration names it: its secret in the clear. */
export interface EntraApp {
  azureTenantId: string;
  clientId: string;
  clientSecret: string;
}

/**
 * `tenantRecord` of `tenantId` registered with `app`, its secret sealed by `sealer` as the registrar seals it
 * (for the tenant's id): a record whose secret the stages open, to call the simulator with.
 */
export function sealedTenantRecord(
  tenantId: string,
  app: EntraApp,
  sealer: { seal(plain: string, context: string): TenantRecord['defender']['clientSecret'] },
  options: TenantRecordOptions = {},
): TenantRecord {
  const record = tenantRecord(tenantId, options);
  return {
    ...record,
    defender: {
      ...record.defender,
      azureTenantId: app.azureTenantId,
      clientId: app.clientId,
      clientSecret: sealer.seal(app.clientSecret, tenantId),
    },
  };
}

/**
 * The stored secrets (`StoredSecrets`, libs/secrets) of the tenant records in `records`, by tenant id, as the
 * tenant store reads them: ids in the map's order, none for a tenant with no record. Reads the map as it is
 * at each call.
 */
export function storedSecretsOf<R>(records: ReadonlyMap<string, R>): {
  ids: () => Promise<string[]>;
  getMany: (tenantIds: readonly string[]) => Promise<Map<string, R>>;
} {
  return {
    ids: async () => [...records.keys()],
    getMany: async (tenantIds) =>
      new Map(
        tenantIds.flatMap((tenantId) => {
          const record = records.get(tenantId);
          return record === undefined ? [] : [[tenantId, record] as const];
        }),
      ),
  };
}

/**
 * A scored device with no identity beyond its id, no contributions, signals or vulnerabilities, and
 * profile hash `h`; `overrides` replaces any field.
 */
export function scoredDevice(
  deviceId: string,
  score: number,
  band: ScoredDevice['band'],
  overrides: Partial<ScoredDevice> = {},
): ScoredDevice {
  return {
    deviceId,
    computerDnsName: null,
    aadDeviceId: null,
    lastIpAddress: null,
    lastExternalIpAddress: null,
    ipAddresses: [],
    machineTags: [],
    rbacGroupName: null,
    score,
    band,
    criticalScore: 0,
    operationalScore: 0,
    contributions: [],
    missing: [],
    signals: {},
    profileHash: 'h',
    vulnerabilities: null,
    ...overrides,
  };
}

/** A score batch of `devices`: tenant acme's cycle c1, started 2026-01-21T10:00:00Z, its first batch of several. */
export function scoreBatchOf(devices: ScoredDevice[]): ScoreBatch {
  return {
    schemaVersion: 1,
    tenantId: 'acme',
    cycleId: 'c1',
    cycleStartedAt: '2026-01-21T10:00:00.000Z',
    batchIndex: 0,
    lastBatch: false,
    collectedAt: '2026-01-21T10:00:30.000Z',
    scoredAt: '2026-01-21T10:00:31.000Z',
    devices,
  };
}

/**
 * Writes into the score store of `redis` a history entry of device `deviceId` as entries were stored before they
 * kept reasons: cycle c0, started 2026-01-01T09:50:00Z, signal criticalCves missing, no reason for it. Returns
 * the entry as stored.
 */
export async function storeHistoryWithoutReasons(
  redis: Pick<TestRedis, 'client' | 'prefix'>,
  tenantId: string,
  deviceId: string,
): Promise<Record<string, unknown>> {
  const older = {
    scoredAt: '2026-01-01T09:50:05.000Z',
    score: 40,
    band: 'Low Risk',
    criticalScore: 20,
    operationalScore: 20,
    missing: ['criticalCves'],
  };
  await redis.client.zadd(
    `${redis.prefix}score-cycles:${tenantId}`,
    Date.parse('2026-01-01T09:50:00.000Z'),
    'c0',
  );
  await redis.client.hset(
    `${redis.prefix}score-cycle-history:${tenantId}:c0`,
    deviceId,
    JSON.stringify(older),
  );
  return older;
}

/**
 * Marks the publisher's record of what VMS holds whole, as its rebuild from `vms.risk-scores` leaves it
 * (`PublishedRebuild`): a tenant's deletion is refused on a record that is not (see `markDeleted`).
 */
export async function markPublishedRebuilt(published: {
  takeRebuild(token: string, ttlMs: number): Promise<boolean>;
  markRebuilt(token: string, at: Date): Promise<boolean>;
}): Promise<void> {
  const token = uniqueId('rebuild');
  if (!(await published.takeRebuild(token, 60_000)) || !(await published.markRebuilt(token, new Date())))
    throw new Error('another rebuild holds the lock');
}

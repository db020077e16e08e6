import type { OutboundMessage, Publisher } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { createSecretSealer } from '@urs/secrets';
import { silentLogger } from '@urs/logging';
import type { RegistrarStateStore, TenantStatus, TenantStore } from '@urs/store';
import { createTenantRegistry, type TenantRegistryDeps } from '../src/registry';

/** A TenantStore in memory, with the same newest-revision-wins rule as the Redis one. */
export function memoryTenantStore(): TenantStore & {
  records: Map<string, TenantRecord>;
  statuses: Map<string, TenantStatus>;
} {
  const records = new Map<string, TenantRecord>();
  const statuses = new Map<string, TenantStatus>();
  const refused = new Set<string>();
  /** The revision of each tenant's last deletion (`remove` with a revision). */
  const removed = new Map<string, number>();
  return {
    records,
    statuses,
    async put(record) {
      const current = records.get(record.tenantId);
      if (current && current.revision >= record.revision) return false;
      if ((removed.get(record.tenantId) ?? 0) >= record.revision) return false;
      records.set(record.tenantId, structuredClone(record));
      return true;
    },
    async get(tenantId) {
      const record = records.get(tenantId);
      return record ? structuredClone(record) : null;
    },
    async getMany(tenantIds) {
      const copies = new Map<string, TenantRecord>();
      for (const tenantId of tenantIds) {
        const record = records.get(tenantId);
        if (record) copies.set(tenantId, structuredClone(record));
      }
      return copies;
    },
    async lookup(tenantId) {
      const record = records.get(tenantId);
      return { record: record ? structuredClone(record) : null, rebuilt: true };
    },
    async ids() {
      return [...records.keys()].sort();
    },
    async remove(tenantId, revision = 0) {
      const current = records.get(tenantId);
      if (revision > 0 && current && current.revision > revision) return false;
      if (revision > (removed.get(tenantId) ?? 0)) removed.set(tenantId, revision);
      records.delete(tenantId);
      statuses.delete(tenantId);
      refused.delete(tenantId);
      return true;
    },
    async updateStatus(tenantId, status) {
      const next: Record<string, unknown> = { ...statuses.get(tenantId) };
      for (const [field, value] of Object.entries(status)) {
        if (value === null) delete next[field];
        else if (value !== undefined) next[field] = value;
      }
      statuses.set(tenantId, next as TenantStatus);
      if (status.state !== undefined && status.state !== 'registration-rejected') refused.delete(tenantId);
    },
    async getStatus(tenantId) {
      return { ...statuses.get(tenantId) };
    },
    async recordRefusal(tenantId, refusal, options) {
      const before = statuses.get(tenantId)?.registrationError;
      const seen =
        before?.source === refusal.source &&
        refusal.generation !== undefined &&
        before.generation === refusal.generation;
      statuses.set(tenantId, {
        ...statuses.get(tenantId),
        registrationError: structuredClone(refusal),
        ...(options.rejected ? { state: 'registration-rejected' as const } : {}),
      });
      if (options.rejected) refused.add(tenantId);
      return !seen;
    },
    async refusedIds() {
      return [...refused].sort();
    },
    async updatePollingStatus(tenantId, status) {
      if (records.get(tenantId)?.enabled !== true) return false;
      await this.updateStatus(tenantId, status);
      return true;
    },
    async cycleListed(tenantId, cycleId, status) {
      if (records.get(tenantId)?.enabled !== true) return false;
      await this.updateStatus(tenantId, status);
      const ofThisCycle = statuses.get(tenantId)?.lastErrorCycleId === cycleId;
      await this.updateStatus(
        tenantId,
        ofThisCycle
          ? { state: 'error' }
          : {
              state: 'active',
              lastErrorCode: null,
              lastErrorMessage: null,
              lastErrorAt: null,
              lastErrorCycleId: null,
            },
      );
      return true;
    },
    async isEmpty() {
      return records.size === 0;
    },
  };
}

/** `time`: the store's clock (Redis's), which stamps the revisions and the pushes' starts. */
export function memoryStateStore(): RegistrarStateStore & { generation: number; time: () => Date } {
  const revisions = new Map<string, number>();
  const locks = new Map<string, string>();
  const deletions = new Map<string, number>();
  const pushesStarted = new Map<number, Date>();
  let clock = 1_000;
  /** Redis's clock, as the store reads it: a millisecond later at each reading. */
  const startedAt = Date.now();
  const time = (): Date => new Date(startedAt + clock++);
  const state = {
    generation: -1,
    time,
    async nextRevision(tenantId: string, floor = 0) {
      return (await state.nextRevisionStamp(tenantId, floor)).revision;
    },
    async nextRevisionStamp(tenantId: string, floor = 0) {
      const at = time();
      const next = Math.max(clock, (revisions.get(tenantId) ?? 0) + 1, floor + 1);
      revisions.set(tenantId, next);
      return { revision: next, at };
    },
    async observeRevision(tenantId: string, revision: number) {
      revisions.set(tenantId, Math.max(revisions.get(tenantId) ?? 0, revision));
    },
    async lastGeneration() {
      return state.generation;
    },
    async observeGeneration(generation: number) {
      state.generation = Math.max(state.generation, generation);
    },
    async observeDeletion(tenantId: string, generation: number) {
      deletions.set(tenantId, Math.max(deletions.get(tenantId) ?? -1, generation));
    },
    async deletionGeneration(tenantId: string) {
      return deletions.get(tenantId) ?? -1;
    },
    async pushStarted(generation: number) {
      if (!pushesStarted.has(generation)) pushesStarted.set(generation, time());
      return pushesStarted.get(generation) as Date;
    },
    async generationStarted() {
      return Math.max(-1, ...pushesStarted.keys());
    },
    async lockTenant(tenantId: string) {
      if (locks.has(tenantId)) return null;
      const token = `lock-${++clock}`;
      locks.set(tenantId, token);
      return token;
    },
    async renewTenantLock(tenantId: string, token: string) {
      return locks.get(tenantId) === token;
    },
    async unlockTenant(tenantId: string, token: string) {
      if (locks.get(tenantId) === token) locks.delete(tenantId);
    },
    async isRebuilt() {
      return true;
    },
    async markRebuilt() {
      return undefined;
    },
  };
  return state;
}

export interface SentMessage {
  topic: string;
  contract: string;
  message: OutboundMessage<unknown>;
}

/** A publisher that keeps what it was given. */
export function memoryPublisher(): Publisher & { sent: SentMessage[] } {
  const sent: SentMessage[] = [];
  return {
    sent,
    async send(topic, contract, messages) {
      for (const message of messages)
        sent.push({ topic, contract, message: structuredClone(message) as OutboundMessage<unknown> });
    },
    async sendRaw() {
      return undefined;
    },
    async close() {
      return undefined;
    },
  };
}

export const testSealer = () =>
  createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', Buffer.alloc(32, 7)]]) });

/**
 * A registry over memory fakes (its tenants' store, state, publisher, the test sealer, no schedules, a silent
 * logger), `deps` replacing any of them.
 */
export function testRegistry(deps: Partial<TenantRegistryDeps> = {}) {
  return createTenantRegistry({
    tenants: memoryTenantStore(),
    state: memoryStateStore(),
    publisher: memoryPublisher(),
    tenantsTopic: 'urs.tenants',
    sealer: testSealer(),
    schedules: { clear: async () => undefined, carryFailure: async () => true },
    logger: silentLogger,
    ...deps,
  });
}

export const GUID_A = '11111111-2222-3333-4444-555555555555';
export const GUID_B = '66666666-7777-8888-9999-000000000000';

export function registrationBody(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    enabled: true,
    azureTenantId: GUID_A,
    clientId: GUID_B,
    clientSecret: 'Sup3r~secret-value',
    pollIntervalMinutes: 15,
    ...overrides,
  };
}

/** A Director tenant record at `revision` (its generation too); `extra` replaces top-level fields. */
export const tenantRecord = (
  tenantId: string,
  revision: number,
  extra: Partial<TenantRecord> = {},
): TenantRecord => ({
  schemaVersion: 1,
  tenantId,
  revision,
  updatedAt: '2026-01-01T00:00:00.000Z',
  source: 'director',
  generation: revision,
  enabled: true,
  defender: {
    azureTenantId: GUID_A,
    clientId: GUID_B,
    clientSecret: { alg: 'A256GCM', keyId: 'k1', iv: 'aXY=', tag: 'dGFn', ciphertext: 'Y3Q=' },
    pollIntervalMinutes: 10,
    cloud: 'commercial',
    region: null,
    riskProfile: null,
  },
  ...extra,
});

import { createCatchUp, readToEndSubscription, type InboundMessage, type TopicSubscription } from '@urs/bus';
import { TENANT_REVISION_HEADER, numericHeader, type TenantRecord } from '@urs/contracts';
import { appQuotaId, type QuotaSharer } from '@urs/defender';
import type { TenantStore } from '@urs/store';

export type TenantChangeListener = (tenantId: string, record: TenantRecord | null) => void;

/**
 * Every tenant record of `urs.tenants`, in this process's memory. Each poller replica reads the whole
 * topic (a consumer group of its own), so any replica can poll any tenant; which one does is decided by
 * the lease. A record older than the one held is ignored; a tombstone removes the tenant.
 */
export interface TenantTable {
  /** The bus handler of `urs.tenants`. */
  handle(message: InboundMessage<TenantRecord>): Promise<void>;
  /**
   * The table's subscription of `urs.tenants` (`topic`): the whole topic, tombstones included, from its
   * beginning. A record dead-lettered counts as read: the last of its partition, it would otherwise hold
   * the table short of its end until `stopWaiting`.
   */
  subscription(topic: string): TopicSubscription<'urs/tenant-record'>;
  get(tenantId: string): TenantRecord | undefined;
  enabled(): TenantRecord[];
  /**
   * The other enabled tenants registered with `record`'s Entra app (`appQuotaId`: its Azure tenant and client
   * ids, in any case), never `record`'s own tenant: they share the app's quota.
   */
  quotaSharers(record: TenantRecord): TenantRecord[];
  size(): number;
  onChange(listener: TenantChangeListener): void;
  /**
   * Sets the offsets (per partition, the last one present when the poller started) up to which the
   * table must read before it is complete; until then nothing is scheduled, so a tenant deleted later
   * in the log is never polled while the log replays.
   */
  expectEnd(lastOffsets: Map<number, bigint>): void;
  caughtUp(): boolean;
  /**
   * Stops waiting for the offsets still missing (a reader that no longer moves: a message held while its
   * dead letter cannot be written); returns how many partitions were still behind.
   */
  stopWaiting(): number;
}

export function createTenantTable(): TenantTable {
  const records = new Map<string, TenantRecord>();
  const listeners: TenantChangeListener[] = [];
  const catchUp = createCatchUp();
  /** The revision of each deletion seen (tombstone header), so a late older record does not bring a tenant back. */
  const deletedAt = new Map<string, number>();

  const table: TenantTable = {
    async handle(message) {
      const tenantId = message.key ?? message.value?.tenantId;
      catchUp.read(message.partition, message.offset);
      if (!tenantId) return;
      const current = records.get(tenantId);
      if (message.value === null) {
        const revision = numericHeader(message.headers, TENANT_REVISION_HEADER);
        if (revision !== undefined) deletedAt.set(tenantId, revision);
        if (!current || (revision !== undefined && current.revision > revision)) return;
        records.delete(tenantId);
        for (const listener of listeners) listener(tenantId, null);
        return;
      }
      if (current && current.revision >= message.value.revision) return;
      if ((deletedAt.get(tenantId) ?? 0) >= message.value.revision) return;
      records.set(tenantId, message.value);
      for (const listener of listeners) listener(tenantId, message.value);
    },
    subscription: (topic) =>
      readToEndSubscription(topic, 'urs/tenant-record', (message) => table.handle(message), catchUp),
    get: (tenantId) => records.get(tenantId),
    enabled: () => [...records.values()].filter((record) => record.enabled),
    quotaSharers(record) {
      const app = appQuotaId(record.defender);
      return table
        .enabled()
        .filter((other) => other.tenantId !== record.tenantId && appQuotaId(other.defender) === app);
    },
    size: () => records.size,
    onChange(listener) {
      listeners.push(listener);
    },
    expectEnd: (lastOffsets) => catchUp.expectEnd(lastOffsets),
    caughtUp: () => catchUp.caughtUp(),
    stopWaiting: () => catchUp.stopWaiting(),
  };
  return table;
}

/**
 * The other enabled tenants registered with the tenant's Entra app (`TenantTable.quotaSharers`), each with its
 * devices at its last listing (its status's `deviceCount`, whichever replica listed it) and its interval, for
 * `planVulnerabilityMode`. The statuses are read in one round trip, and only for a tenant sharing its app.
 */
export function quotaSharersOf(
  table: Pick<TenantTable, 'quotaSharers'>,
  tenants: Pick<TenantStore, 'deviceCounts'>,
): (record: TenantRecord) => Promise<QuotaSharer[]> {
  return async (record) => {
    const others = table.quotaSharers(record);
    if (others.length === 0) return [];
    const counts = await tenants.deviceCounts(others.map((other) => other.tenantId));
    return others.map((other) => ({
      deviceCount: counts.get(other.tenantId),
      pollIntervalMinutes: other.defender.pollIntervalMinutes,
    }));
  };
}

import { createCatchUp, readToEndSubscription, type InboundMessage, type TopicSubscription } from '@urs/bus';
import { TENANT_REVISION_HEADER, numericHeader, type TenantRecord } from '@urs/contracts';
import { appQuotaId } from '@urs/defender';

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
   * The enabled tenants registered with `record`'s Entra app (`appQuotaId`: its Azure tenant and client ids, in
   * any case), `record`'s own tenant counted once whatever the table holds of it: they share the app's quota.
   */
  quotaSharers(record: TenantRecord): number;
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
      let sharers = 1;
      for (const other of table.enabled())
        if (other.tenantId !== record.tenantId && appQuotaId(other.defender) === app) sharers++;
      return sharers;
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

/**
 * A deleted tenant's marker, `{prefix}published-deleted:{tenantId}` (hash: `deletedAt`, and `registeredAt`
 * once registered again, both epoch ms), written by the publisher when it reads the tenant's tombstone (see
 * PublishedStore.markDeleted), before it tombstones its devices and removes their scores. The score store reads it too: a score
 * of a cycle it says is of a deleted tenant, stored after that removal, would stay for ever.
 */
export function tenantDeletionKey(prefix: string, tenantId: string): string {
  return `${prefix}published-deleted:${tenantId}`;
}

import type { MessageHandler } from '@urs/bus';
import { TENANT_REVISION_HEADER, numericHeader, type TenantRecord } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { tenantsNotRebuilt, type PublishedStore, type ScoreStore, type TenantStore } from '@urs/store';
import type { InOrder } from './in-order';
import { withTenantLease, type TenantLeasing } from './lease';
import type { PublishedRebuilder } from './rebuild';
import type { Tombstones } from './tombstones';

export interface TenantsHandlerDeps {
  published: Pick<
    PublishedStore,
    | 'markDeleted'
    | 'forgetDeleted'
    | 'registeredAgain'
    | 'takeTenantLease'
    | 'renewTenantLease'
    | 'releaseTenantLease'
  >;
  /**
   * The tenants' records as the registrar keeps them: a deletion older than the record is not acted on, nor
   * one read while Redis lost the records and the registrar has not rebuilt them (`lookup`).
   */
  tenants: Pick<TenantStore, 'lookup'>;
  /** Sends to `vms.risk-scores` and forgets, as a complete cycle's tombstones do. */
  tombstones: Tombstones;
  /** The deleted tenant's scores, the published devices' and the others', are removed there. */
  scores: Pick<ScoreStore, 'removeTenant'>;
  /** The tenants' queue, shared with the score handler and the sweep (see `CycleCompletionDeps.inOrder`). */
  inOrder: InOrder;
  /** This replica's tenant leases, shared with the score handler and the sweep. */
  leasing: TenantLeasing;
  /**
   * The rebuild of what VMS holds after Redis lost it: a deletion tombstones the devices the publisher
   * knows, so it waits for it (devices missing from the record would stay in VMS for ever).
   */
  rebuild: Pick<PublishedRebuilder, 'ensure'>;
  logger: Logger;
}

/**
 * The `urs.tenants` handler, in the publisher's group: each tenant's records go to one replica.
 *
 * A deleted tenant (a tombstone, as the registrar writes on `DELETE /v1/tenants/{id}/defender`) has no
 * more cycles, so no complete cycle would ever tombstone its devices: VMS would enforce on their last
 * scores for ever. Its deletion tombstones every device published and not tombstoned yet, and every device
 * with a stored score (a record sent by a batch that was not recorded yet, the publisher stopped in between
 * or its send failed part way, is known only there: the batch comes again as a deleted tenant's and is
 * dropped), then forgets the tenant's state and every score of its devices, published or not. A disabled
 * tenant is a record like any other: nothing is sent for it (Director's full push disables a tenant it leaves
 * out, it never deletes it).
 *
 * The deletion is recorded first, with its time (the tombstone's timestamp) and revision: batches of the
 * tenant's cycles still on their way are then dropped, and so are the summaries of its open cycles, until
 * the tenant is registered again (a record newer than the deletion in the tenant store, which comes before
 * this handler reads it); cycles that start after the deletion publish as any. All of it runs in the
 * tenant's queue, holding its lease, so no batch of the tenant is between reading what changed and
 * recording what it published meanwhile. At least once: a deletion handled again finds nothing left to
 * tombstone, or sends the same tombstones again (harmless on a compacted topic).
 */
export function createTenantsHandler(deps: TenantsHandlerDeps): MessageHandler<TenantRecord> {
  return async (message) => {
    const tenantId = message.value?.tenantId ?? message.key;
    if (!tenantId) return;
    const at = message.timestamp;
    // Records of one tenant may be handed over two at a time: its queue keeps the deletion and a
    // registration after it in order.
    if (message.value !== null) {
      await deps.inOrder(tenantId, () => deps.published.registeredAgain(tenantId, at));
      return;
    }
    await deps.inOrder(tenantId, async () => {
      // A deletion the tenant was registered again after (its record newer than the deletion's revision):
      // read again from the topic's beginning (this group's first start, an offset reset) while the
      // registration after it is not compacted away yet. Acted on, it would tombstone a live tenant's devices.
      const revision = numericHeader(message.headers, TENANT_REVISION_HEADER);
      const found = revision === undefined ? undefined : await deps.tenants.lookup(tenantId);
      // No record in a Redis that lost its data (not rebuilt yet) tells nothing of a registration after the
      // deletion: held until the registrar has written the records back.
      if (found && found.record === null && !found.rebuilt) throw tenantsNotRebuilt(tenantId);
      const current = found?.record;
      if (current && revision !== undefined && current.revision > revision) {
        // Its devices published before stay for the registration's cycles to keep or tombstone; a score
        // of a cycle that started before the deletion is the deleted registration's all the same, and one
        // never published would stay for ever, shown by the registrar's API as the registration's.
        await deps.scores.removeTenant(tenantId, { startedBefore: at });
        deps.logger.info('tenant deletion older than its record: nothing tombstoned', {
          tenantId,
          deletedRevision: revision,
          revision: current.revision,
        });
        return;
      }
      const lease = { tenantId, ...deps.leasing };
      const outcome = await withTenantLease(
        deps.published,
        lease,
        deps.logger,
        { wait: message.signal },
        async (held) => {
          await deps.rebuild.ensure(message.signal);
          // Each step only while the lease holds (see `whileHeld`): a deletion handled again does it all anew.
          held.throwIfLost();
          const gone = await deps.published.markDeleted(tenantId, at, revision);
          await deps.tombstones(tenantId, gone, undefined, held);
          held.throwIfLost();
          await deps.published.forgetDeleted(tenantId);
          held.throwIfLost();
          // The tombstones removed the listed devices' scores; what else the tenant's cycles left (their
          // histories, a score stored after a registration the deletion is older than) would stay for ever:
          // no cycle of the tenant will remove it, and the registrar's API would show it again were the
          // tenant registered again. A registration landing meanwhile keeps its cycles' scores.
          const whole = await deps.scores.removeTenant(tenantId, { deletedRevision: revision });
          return { tombstones: gone.length, ...(whole ? {} : { registeredMeanwhile: true }) };
        },
      );
      deps.logger.info('tenant deleted, its devices tombstoned', { tenantId, ...outcome });
    });
  };
}

/**
 * Which device batches the batches' topic surely takes, as far as this replica has seen: those no larger, in
 * bytes of key and value (`recordBytes`, as the publisher counts them), than one it took or than the floor its
 * own `max.message.bytes` gives (`takesUpTo`, read at the replica's start: its first cycles, and each after a
 * restart, would otherwise know of none), and smaller than any it refused as too large since (its
 * `max.message.bytes` lowered meanwhile). Shared by the replica's cycles.
 *
 * A cycle keeps its totals as pending right before its last batch only when that batch fits so (`runCycle`):
 * a last batch Kafka refused as too large after its totals were kept left them to a poller taking the tenant
 * over (the lease lapsed during the send, or the poller was killed before it dropped them), which ended the
 * cycle as listed from them, and the cycle waited for a batch that never came until its deadline. Nothing in
 * Redis can tell a refused send from one taken when the poller is gone right after it, so no refusal as too
 * large may follow the totals kept.
 */
export interface BatchFit {
  /** Whether the topic surely takes a record of `bytes`. */
  fits(bytes: number): boolean;
  /** The topic took a record of `bytes`. */
  taken(bytes: number): void;
  /** The topic refused a record of `bytes` as too large. */
  refused(bytes: number): void;
  /**
   * The topic's own limit takes records of up to `bytes` (`readBatchFloor`, at the replica's start): those fit
   * as if one as large was taken, until a refusal lowers it. 0 changes nothing.
   */
  takesUpTo(bytes: number): void;
}

export function createBatchFit(): BatchFit {
  /** The largest record known to fit; 0 before the first one taken, or the floor of the topic's limit. */
  let largest = 0;
  return {
    fits: (bytes) => bytes <= largest,
    taken(bytes) {
      largest = Math.max(largest, bytes);
    },
    refused(bytes) {
      largest = Math.min(largest, bytes - 1);
    },
    takesUpTo(bytes) {
      largest = Math.max(largest, bytes);
    },
  };
}

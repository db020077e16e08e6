/**
 * The offset a partition may be committed at: the smallest offset still unfinished, or, when every
 * accepted message is finished, the position after the last one accepted. Committing it never passes
 * a message that is not finished, so a crash redelivers that message and whatever came after it.
 * Undefined when nothing was accepted yet (nothing to commit).
 *
 * @param unfinished offsets accepted and not finished, ascending
 * @param end the next offset to read after everything accepted (Kafka offsets are not contiguous: a
 *   compacted topic or a transaction marker leaves gaps, so `end` is not simply the last offset + 1)
 */
export function committableOffset(
  unfinished: readonly bigint[],
  end: bigint | undefined,
): bigint | undefined {
  return unfinished[0] ?? end;
}

/**
 * Offsets of one partition between what was committed and what was fetched, for handling the
 * messages of a partition out of order (different keys at once) while committing in order.
 */
export class PartitionOffsets {
  /** Ascending: messages are accepted in offset order. */
  private readonly unfinished: bigint[] = [];
  private next: bigint | undefined;

  /** The next offset to read after everything accepted or skipped; undefined before the first. */
  get end(): bigint | undefined {
    return this.next;
  }

  /** Messages accepted and not yet finished (queued or in flight). */
  get unfinishedCount(): number {
    return this.unfinished.length;
  }

  /** Whether the message was already accepted (a redelivery after a rebalance, or a repeated fetch). */
  isAccepted(offset: bigint): boolean {
    return this.next !== undefined && offset < this.next;
  }

  /** Takes a message in. Offsets must rise: one already accepted is refused, so it is never counted twice. */
  accept(offset: bigint): void {
    if (this.isAccepted(offset)) {
      throw new RangeError(`offset ${offset} is not after ${this.next} (already accepted)`);
    }
    this.unfinished.push(offset);
    this.next = offset + 1n;
  }

  /**
   * Moves the end past offsets that carry no message for the handlers (a transaction's control
   * record closing the batch). Never moves it back.
   */
  advance(next: bigint): void {
    if (this.next === undefined || next > this.next) this.next = next;
  }

  /** Marks a message done; an offset not unfinished (already finished, never accepted) changes nothing. */
  finish(offset: bigint): void {
    const index = this.unfinished.indexOf(offset);
    if (index >= 0) this.unfinished.splice(index, 1);
  }

  /** See committableOffset. */
  watermark(): bigint | undefined {
    return committableOffset(this.unfinished, this.next);
  }
}

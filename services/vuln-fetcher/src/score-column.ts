/** The room a column is made with. */
const FIRST_ROOM = 1024;

/**
 * A fold's CVSS scores, one per (device, CVE) pair, in a byte each while every score is a whole number of
 * tenths from -12.8 to 12.7: Microsoft gives CVSS v3 with one decimal, 0–10, and the fold writes -1 for
 * none. A 100,000-device export at ~57 rows a device holds ~2.8 million pairs, which took 23 MB as 8-byte
 * doubles. From the first score that is not exactly such a number of tenths (two decimals, a value out of
 * range), the column holds doubles instead, each score as given: what the fold reads back is always the
 * very number written.
 */
export class ScoreColumn {
  /** Score×10 per pair, while every score fits; undefined once one did not. */
  private tenths: Int8Array<ArrayBuffer> | undefined;
  /** Each score as given, once one did not fit in tenths. */
  private exact: Float64Array<ArrayBuffer> | undefined;

  private constructor(values: Int8Array<ArrayBuffer> | Float64Array<ArrayBuffer>) {
    // Told apart by width, not `instanceof`: values from another realm (a copy) are not its Int8Array.
    if (values.BYTES_PER_ELEMENT === 1) this.tenths = values as Int8Array<ArrayBuffer>;
    else this.exact = values as Float64Array<ArrayBuffer>;
  }

  /** An empty column, with room for `length` scores. */
  static withRoom(length = FIRST_ROOM): ScoreColumn {
    return new ScoreColumn(new Int8Array(length));
  }

  /** The column over values another column gave out (`values`), which it takes over. */
  static of(values: Int8Array<ArrayBuffer> | Float64Array<ArrayBuffer>): ScoreColumn {
    return new ScoreColumn(values);
  }

  /** The scores it has room for. */
  get length(): number {
    return (this.tenths ?? (this.exact as Float64Array)).length;
  }

  /** Whether the scores are held in tenths (a byte each). */
  get compact(): boolean {
    return this.tenths !== undefined;
  }

  get(at: number): number {
    return this.tenths ? (this.tenths[at] as number) / 10 : ((this.exact as Float64Array)[at] as number);
  }

  set(at: number, score: number): void {
    if (this.tenths) {
      const tenths = Math.round(score * 10);
      // -0 is not kept as tenths: it would come back as 0.
      if (tenths >= -128 && tenths <= 127 && tenths / 10 === score && !Object.is(score, -0)) {
        this.tenths[at] = tenths;
        return;
      }
      this.widen();
    }
    (this.exact as Float64Array)[at] = score;
  }

  /**
   * Makes room for at least `needed` scores, by half again (less slack than doubling): the scores kept,
   * the old room freed once copied.
   */
  grow(needed: number): void {
    if (needed <= this.length) return;
    const length = Math.max(needed, Math.ceil(this.length * 1.5));
    if (this.tenths) {
      const bigger = new Int8Array(length);
      bigger.set(this.tenths);
      this.tenths = bigger;
    } else {
      const bigger = new Float64Array(length);
      bigger.set(this.exact as Float64Array);
      this.exact = bigger;
    }
  }

  /** The first `used` scores, for another thread to take over (`ScoreColumn.of`); the buffer may be moved. */
  values(used: number): Int8Array<ArrayBuffer> | Float64Array<ArrayBuffer> {
    return (this.tenths ?? (this.exact as Float64Array<ArrayBuffer>)).subarray(0, used);
  }

  /** Every score from tenths to doubles, the same numbers. */
  private widen(): void {
    const tenths = this.tenths as Int8Array;
    const exact = new Float64Array(tenths.length);
    for (let at = 0; at < tenths.length; at++) exact[at] = (tenths[at] as number) / 10;
    this.exact = exact;
    this.tenths = undefined;
  }
}

/** The body is not the JSON object an OData answer must be. */
export class MalformedODataError extends Error {}

// Local on purpose, as in bulk-rows (shared imports are property loads in the scanning loops).
const OPEN_OBJECT = 0x7b; // {
const CLOSE_OBJECT = 0x7d; // }
const OPEN_ARRAY = 0x5b; // [
const CLOSE_ARRAY = 0x5d; // ]
const QUOTE = 0x22; // "
const BACKSLASH = 0x5c;
const COMMA = 0x2c;

function isWhitespace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new MalformedODataError(`invalid JSON in the answer: ${(error as Error).message}`);
  }
}

/**
 * Reads rows of a known shape straight from their bytes, without making text or a parsed tree of them.
 * `read` must decline (-1) every row it cannot read exactly as `toRow(JSON.parse(row))` would, invalid
 * JSON included: the scanner then parses that row whole.
 */
export interface RowReader<T> {
  /** Reads the row whose `{` is at `from`; the offset just past its `}`, or -1 when it declines. */
  read(bytes: Buffer, from: number): number;
  /** What the row last read became. */
  readonly value: T;
}

/**
 * Takes an OData answer's bytes as they arrive (`ODataRowScanner` is one); `end` says what the answer held
 * besides its rows, or throws MalformedODataError when it was not a whole OData object. Any other failure of
 * `end` is the sink's own: the call fails with it as it is, not retried as an answer Microsoft got wrong.
 */
export interface ODataSink {
  /**
   * Takes the next bytes. A promise says the sink is behind: the answer is read no further (the socket
   * is paused, and the sender waits) until it settles, so bytes do not pile up in memory meanwhile.
   */
  push(chunk: Buffer): void | Promise<void>;
  end(): ODataRest | Promise<ODataRest>;
}

/** What is left of an OData answer once its rows were handed out: the other top-level members. */
export interface ODataRest {
  /** Every top-level member but `value` (e.g. `@odata.nextLink`). */
  members: Record<string, unknown>;
  /** Whether the answer had a top-level `value` array. */
  hasValue: boolean;
}

/**
 * Reads an OData answer `{…, "value": [row, row, …], …}` as its bytes arrive and hands each row of the
 * top-level `value` array to `onRow` as soon as it is complete, parsed on its own. A page (a bulk export
 * page is ~50 MB of JSON) thus never exists as one buffer, one string and one object tree at once: only
 * the row being read and what `onRow` keeps of the rows. Works on bytes: every structural character is
 * ASCII, and no byte of a multi-byte UTF-8 character is, so a character split over two chunks is safe.
 * With a `reader`, a row that lies whole in one chunk is first offered to it, and parsed whole only when
 * the reader declines it: the reader reads it in the same pass as the scan, with no text made of it.
 */
export class ODataRowScanner<T = unknown> implements ODataSink {
  /** Nesting depth outside strings: 1 inside the answer object, 2 inside its `value` array. */
  private depth = 0;
  private inString = false;
  private escaped = false;
  /** Inside the `value` array (depth ≥ 2 belongs to it). */
  private inValue = false;
  private hasValue = false;
  /** A row of the `value` array was read (so an empty entry before `]` is an error). */
  private rowsSeen = false;
  /** The answer's closing brace was read. */
  private closed = false;
  /** Bytes of the member (depth 1) or row (depth 2) being read; `start` is its offset in the current chunk. */
  private parts: Buffer[] = [];
  private start = -1;
  private readonly members: Record<string, unknown> = {};
  /** The chunk whose next backslash (from the last look on) is `nextBackslash` (-1: none left). */
  private backslashChunk: Buffer | undefined;
  private nextBackslash = -1;

  /**
   * @param onRow receives each row, as `toRow` made it of the parsed row or as `reader` read it
   * @param toRow what a row parsed whole becomes (the parsed value itself by default)
   */
  constructor(
    private readonly onRow: (row: T) => void,
    private readonly toRow: (parsed: unknown) => T = (parsed) => parsed as T,
    private readonly reader?: RowReader<T>,
  ) {}

  push(chunk: Buffer): void {
    for (let at = 0; at < chunk.length; at++) {
      const byte = chunk[at] as number;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (byte === BACKSLASH) this.escaped = true;
        else if (byte === QUOTE) this.inString = false;
        else at = this.skipPlainText(chunk, at);
        continue;
      }
      if (this.closed) {
        if (!isWhitespace(byte)) throw new MalformedODataError('text after the end of the answer object');
        continue;
      }
      if (this.depth === 0) {
        if (byte === OPEN_OBJECT) {
          this.depth = 1;
          this.start = at + 1;
        } else if (!isWhitespace(byte)) throw new MalformedODataError('the answer is not a JSON object');
        continue;
      }
      at = this.structural(chunk, at, byte);
    }
    if (this.start >= 0) {
      this.parts.push(chunk.subarray(this.start));
      this.start = 0;
    }
  }

  /**
   * Inside a string, jumps to just before its next quote or backslash, or to the chunk's end when it
   * has neither: most of a page is string text, which indexOf scans far faster than a byte loop. The
   * next backslash is remembered per chunk, as most chunks have few or none.
   */
  private skipPlainText(chunk: Buffer, at: number): number {
    if (chunk !== this.backslashChunk || (this.nextBackslash >= 0 && this.nextBackslash < at)) {
      this.backslashChunk = chunk;
      this.nextBackslash = chunk.indexOf(BACKSLASH, at);
    }
    const quote = chunk.indexOf(QUOTE, at);
    const backslash = this.nextBackslash;
    const next = quote < 0 ? backslash : backslash < 0 ? quote : Math.min(quote, backslash);
    return next < 0 ? chunk.length - 1 : next - 1;
  }

  /** Every top-level member but the rows; throws when the answer ended early. */
  end(): ODataRest {
    if (!this.closed || this.inString)
      throw new MalformedODataError('the answer ended before its last brace');
    return { members: this.members, hasValue: this.hasValue };
  }

  /** Handles a byte outside strings; returns the offset of the last byte handled (past a row a reader read). */
  private structural(chunk: Buffer, at: number, byte: number): number {
    if (this.inValue && this.depth === 2) {
      if (byte === COMMA || byte === CLOSE_ARRAY) {
        const text = this.entryText(chunk, at);
        if (text !== undefined) this.parseEntry(text, byte);
        this.endEntry(at, byte);
        return at;
      }
      if (byte === OPEN_OBJECT && this.reader && this.entryIsBlank(chunk, at)) {
        const separator = this.readRow(this.reader, chunk, at);
        if (separator >= 0) return separator;
      }
    }
    if (byte === QUOTE) {
      this.inString = true;
    } else if (byte === OPEN_OBJECT || byte === OPEN_ARRAY) {
      if (this.depth === 1 && byte === OPEN_ARRAY && this.start >= 0 && this.isValueKey(chunk, at)) {
        this.inValue = true;
        this.hasValue = true;
        this.rowsSeen = false;
        this.parts = [];
        this.start = at + 1;
      }
      this.depth++;
    } else if (byte === CLOSE_OBJECT || byte === CLOSE_ARRAY) {
      this.depth--;
      if (this.depth === 0) {
        if (byte !== CLOSE_OBJECT) throw new MalformedODataError('unbalanced brackets in the answer');
        this.member(this.take(chunk, at), true);
        this.closed = true;
        this.start = -1;
      }
    } else if (byte === COMMA && this.depth === 1) {
      this.member(this.take(chunk, at), false);
      this.start = at + 1;
    } else if (this.depth === 1 && this.start < 0 && !isWhitespace(byte)) {
      throw new MalformedODataError('text after the "value" array where a comma or a brace belongs');
    }
    return at;
  }

  /**
   * The text of the entry of `value` that ends at `at`, and forgets it; undefined when the reader took it
   * instead. A row over several chunks is offered to the reader once joined (the reader reads a row in
   * one buffer): with chunks of a few kilobytes, that is one row in ten of an export.
   */
  private entryText(chunk: Buffer, at: number): string | undefined {
    if (!this.reader || this.parts.length === 0) return this.take(chunk, at);
    const bytes = Buffer.concat([...this.parts, chunk.subarray(this.start, at)]);
    this.parts = [];
    return this.readJoined(this.reader, bytes) ? undefined : bytes.toString('utf8');
  }

  /** Whether the reader took the row that is all of `bytes` (but whitespace around it). */
  private readJoined(reader: RowReader<T>, bytes: Buffer): boolean {
    let from = 0;
    while (from < bytes.length && isWhitespace(bytes[from] as number)) from++;
    if (bytes[from] !== OPEN_OBJECT) return false;
    let end = reader.read(bytes, from);
    if (end < 0) return false;
    while (end < bytes.length && isWhitespace(bytes[end] as number)) end++;
    if (end !== bytes.length) return false;
    this.onRow(reader.value);
    return true;
  }

  /** Parses an entry of `value` that ends with `separator`; only the last may be empty (`[]`). */
  private parseEntry(text: string, separator: number): void {
    if (text.trim() !== '') this.onRow(this.toRow(parse(text)));
    else if (separator === COMMA || this.rowsSeen) throw new MalformedODataError('an empty entry in "value"');
  }

  /** After the `,` or `]` at `at` that ends an entry of `value`. */
  private endEntry(at: number, byte: number): void {
    if (byte === CLOSE_ARRAY) {
      this.depth = 1;
      this.inValue = false;
      this.start = -1;
      return;
    }
    this.rowsSeen = true;
    this.start = at + 1;
  }

  /** Whether nothing but whitespace precedes `at` in the current entry of `value`, all of it in `chunk`. */
  private entryIsBlank(chunk: Buffer, at: number): boolean {
    if (this.parts.length > 0 || this.start < 0) return false;
    for (let index = this.start; index < at; index++) if (!isWhitespace(chunk[index] as number)) return false;
    return true;
  }

  /**
   * Offers the row whose `{` is at `at` to the reader. The row is taken only when the reader read it and
   * a `,` or `]` follows it in this chunk (anything else is left to the whole parse and its error); the
   * offset of that separator, or -1.
   */
  private readRow(reader: RowReader<T>, chunk: Buffer, at: number): number {
    let next = reader.read(chunk, at);
    if (next < 0) return -1;
    while (next < chunk.length && isWhitespace(chunk[next] as number)) next++;
    const byte = chunk[next];
    if (byte !== COMMA && byte !== CLOSE_ARRAY) return -1;
    this.onRow(reader.value);
    this.endEntry(next, byte);
    return next;
  }

  /** Whether the member read so far is `"value":` (the `[` at `at` opens its array). */
  private isValueKey(chunk: Buffer, at: number): boolean {
    const text = this.peek(chunk, at);
    return /^\s*"value"\s*:\s*$/.test(text);
  }

  /** A complete member at depth 1 (`"key": value`), or nothing (the rest after the `value` array). */
  private member(text: string, last: boolean): void {
    if (text.trim() === '') {
      if (!last && !this.afterValue()) throw new MalformedODataError('an empty member in the answer');
      return;
    }
    Object.assign(this.members, parse(`{${text}}`));
  }

  /** The `value` array just ended, so the text up to this separator is whitespace, not a member. */
  private afterValue(): boolean {
    return this.hasValue && this.start === -1;
  }

  private peek(chunk: Buffer, at: number): string {
    const tail = chunk.subarray(Math.max(this.start, 0), at);
    return (this.parts.length === 0 ? tail : Buffer.concat([...this.parts, tail])).toString('utf8');
  }

  /** The text from the current start to `at` (exclusive), and forgets it. */
  private take(chunk: Buffer, at: number): string {
    if (this.start < 0) {
      this.parts = [];
      return '';
    }
    const text = this.peek(chunk, at);
    this.parts = [];
    return text;
  }
}

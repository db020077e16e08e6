import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { missingReasonsOf, toDeviceRecord, type DeviceRecord } from '@urs/contracts';
import { listedMachine, parseMachine, parseVulnerability } from '@urs/defender/records';
import { errorMessage } from '@urs/resilience';
import { BANDS, compileProfile, parseTimestampMs, scoreDevice } from '@urs/scoring';
import type { Band, CompiledProfile, ScoreResult, VulnerabilityRecord } from '@urs/scoring';
import type { Command, CommandIo } from '../command';
import { argumentsError } from '../args';

const USAGE = `usage: urs score [--profile FILE] [--now ISO] [--summary] [--compare OTHER_PROFILE]

Reads MDE machine records as NDJSON on stdin, one per line, each optionally with "vulnerabilities":
an array of MDE vulnerability records, or null/absent when they could not be fetched, and then
optionally "fetchError": {"code"} saying why (as urs defender devices writes it). Each record is read as
the pipeline reads Microsoft's (field names in any case, a signal or date of another shape missing); a
machine record the pipeline would skip as invalid is a bad line. A vulnerability record that is not an
object, has no id, or whose cvssV3 is neither a number from 0 to 10, numeric text of one (digits, an
optional fraction), nor null is skipped (named on stderr, counted in the summary line), as the
pipeline skips it; a device none of whose records could be read has criticalCves missing. Writes one
NDJSON result per device: deviceId, score, band, criticalScore, operationalScore, contributions, missing,
signals (each value scored and when the device reported it), profileHash, and missingReasons when a
signal is missing: why, by signal, with the pipeline's codes (NOT_REPORTED: the device list gave no
usable value; for criticalCves the fetchError's code as the pipeline keeps it, DEFENDER_UNREADABLE_RECORDS
when rows were given and none could be read, UNKNOWN when no reason was given).

  --profile FILE    the tenant's risk profile (JSON); default: the vendor's default profile
  --now ISO         the cycle's start, against which lastSeen is aged; default: now
  --summary         print only the band distribution: {"kind":"summary",...}, with the number of
                    vulnerability records skipped (skippedVulnerabilities)
  --compare FILE    dry-run a new profile: print a {"kind":"change",...} line per device whose band
                    differs between --profile and FILE, then a {"kind":"summary",...} line with the
                    number of changes and both band distributions (with --summary: only the summary)

Exit status: 0 all lines scored; 1 some lines were bad (each named on stderr by its line number, the
others still scored); 2 bad usage or an invalid profile.`;

/** Output is written in chunks of about this many characters: one write per line would dominate the run time. */
const CHUNK_CHARS = 64 * 1024;

interface Options {
  profile: CompiledProfile;
  compare: CompiledProfile | undefined;
  nowMs: number;
  summary: boolean;
}

type BandCounts = Record<Band, number>;

/** `urs score`: see USAGE. */
export const scoreCommand: Command = async (args, io) => {
  let options: Options | 'help';
  try {
    options = await readOptions(args);
  } catch (error) {
    io.stderr.write(`urs score: ${errorMessage(error)}\n`);
    return 2;
  }
  if (options === 'help') {
    io.stdout.write(`${USAGE}\n`);
    return 0;
  }
  return run(options, io);
};

class UsageError extends Error {}

async function readOptions(args: string[]): Promise<Options | 'help'> {
  const options = {
    profile: { type: 'string' },
    now: { type: 'string' },
    summary: { type: 'boolean' },
    compare: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  } as const;
  let values;
  try {
    ({ values } = parseArgs({ args, strict: true, allowPositionals: false, options }));
  } catch (error) {
    // Never quoting the argument: a secret pasted in the wrong place would land on stderr.
    throw new UsageError(`${argumentsError(error, args, options, 1)}\n${USAGE}`);
  }
  if (values.help) return 'help';
  let nowMs = Date.now();
  if (values.now !== undefined) {
    nowMs = parseTimestampMs(values.now);
    // The value is not shown: it may be a secret, given where the time belongs.
    if (Number.isNaN(nowMs))
      throw new UsageError('--now: must be an ISO 8601 time such as 2024-01-08T11:04:02Z (not shown)');
  }
  return {
    profile: await loadProfile('--profile', values.profile),
    compare: values.compare === undefined ? undefined : await loadProfile('--compare', values.compare),
    nowMs,
    summary: values.summary ?? false,
  };
}

/**
 * The profile in `file`, given as `option`. Its errors name the option, never the path nor the text: a secret, or
 * a secret's file, given where the profile belongs would land on stderr (and in logs). Node's own messages quote
 * both (`ENOENT: …, open '<path>'`, `Unexpected token 'S', "S3cr3t…" is not valid JSON`): only the error's code,
 * and where the JSON breaks, are kept of them.
 */
async function loadProfile(option: string, file: string | undefined): Promise<CompiledProfile> {
  if (file === undefined) return compileProfile(undefined);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new UsageError(`${option}: cannot read the file given (${code})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    const at = /at position \d+(?: \(line \d+ column \d+\))?/.exec(errorMessage(error))?.[0];
    throw new UsageError(`${option}: the file given is not valid JSON${at ? ` (${at})` : ''}`);
  }
  try {
    return compileProfile(json as object);
  } catch (error) {
    throw new UsageError(`${option}: ${errorMessage(error)}`);
  }
}

async function run(options: Options, io: CommandIo): Promise<number> {
  const { profile, compare, nowMs, summary } = options;
  const out = new ChunkedWriter(io.stdout);
  const bands = emptyCounts();
  const compareBands = emptyCounts();
  let devices = 0;
  let failed = 0;
  let skippedVulnerabilities = 0;
  let changed = 0;
  let lineNumber = 0;

  const lines = createInterface({ input: io.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (out.closed) break;
    lineNumber += 1;
    if (line.trim().length === 0) continue;
    let deviceId: string;
    let result: ScoreResult;
    let other: ScoreResult | undefined;
    let vulnerabilitiesError: { code: string } | undefined;
    try {
      const record = parseRecord(line);
      deviceId = record.deviceId;
      vulnerabilitiesError = record.fetchError;
      const skipped: string[] = [];
      const vulnerabilities = readVulnerabilities(record.vulnerabilities, (index, reason) =>
        skipped.push(`urs score: line ${lineNumber}: vulnerabilities[${index}] skipped: ${reason}\n`),
      );
      result = scoreDevice(record.machine, vulnerabilities, profile, nowMs);
      if (compare) other = scoreDevice(record.machine, vulnerabilities, compare, nowMs);
      // Rows given: criticalCves is missing only when none of them could be read (each named above).
      if (vulnerabilitiesError === undefined && vulnerabilities === null && record.vulnerabilities)
        vulnerabilitiesError = { code: UNREADABLE_RECORDS };
      // Told only for a line that is scored: a line that fails is named once, with its reason.
      for (const note of skipped) io.stderr.write(note);
      skippedVulnerabilities += skipped.length;
    } catch (error) {
      failed += 1;
      io.stderr.write(`urs score: line ${lineNumber}: ${errorMessage(error)}\n`);
      continue;
    }
    devices += 1;
    bands[result.band] += 1;
    if (other) {
      compareBands[other.band] += 1;
      if (other.band !== result.band) {
        changed += 1;
        if (!summary) {
          const from = { score: result.score, band: result.band };
          await out.write(
            JSON.stringify({ kind: 'change', deviceId, from, to: { score: other.score, band: other.band } }),
          );
        }
      }
    } else if (!summary) {
      // The whole result, as the pipeline's record carries it: the signal values and their timestamps show
      // what put a device in its inactivity bucket, the hash which profile scored it, and why each missing
      // signal is missing (nothing of it for a device missing none, most of them).
      const reasons = missingReasonsOf(result.missing, vulnerabilitiesError);
      await out.write(
        JSON.stringify({
          deviceId,
          ...result,
          ...(reasons !== undefined ? { missingReasons: reasons } : {}),
        }),
      );
    }
  }

  const counted = { kind: 'summary', devices, failed, skippedVulnerabilities };
  if (compare) {
    const profileHash = { from: profile.hash, to: compare.hash };
    await out.write(
      JSON.stringify({ ...counted, changed, profileHash, bands: { from: bands, to: compareBands } }),
    );
  } else if (summary) {
    await out.write(JSON.stringify({ ...counted, profileHash: profile.hash, bands }));
  }
  await out.flush();
  return failed > 0 ? 1 : 0;
}

interface InputRecord {
  deviceId: string;
  /** What the pipeline passes on of the machine: the listing's reading, cut down to its DeviceRecord. */
  machine: DeviceRecord;
  /** The records as given: an array (each read by `readVulnerabilities`), or null/absent. */
  vulnerabilities: unknown[] | null | undefined;
  /** Why the vulnerabilities are null, when the record says it: its code only. */
  fetchError: { code: string } | undefined;
}

/** The code of a device whose vulnerability rows were answered, none of them readable (as the pipeline's). */
const UNREADABLE_RECORDS = 'DEFENDER_UNREADABLE_RECORDS';

/** One input line: a machine record with an `id`, its `vulnerabilities` riding along. Throws naming the field. */
function parseRecord(line: string): InputRecord {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (error) {
    throw new Error(`not valid JSON (${errorMessage(error)})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error('must be a JSON object (an MDE machine record)');
  }
  const { vulnerabilities, fetchError, ...fields } = value as Record<string, unknown>;
  if (vulnerabilities !== undefined && vulnerabilities !== null && !Array.isArray(vulnerabilities)) {
    throw new Error(
      'vulnerabilities: must be an array of MDE vulnerability records, or null when not fetched',
    );
  }
  // Read as the poller reads the listing: a record it would skip as invalid is named, with the field.
  const parsed = parseMachine(fields);
  if (!parsed.ok) throw new Error(`not a machine record the pipeline reads: ${parsed.reason}`);
  let code: unknown;
  if (fetchError !== undefined && fetchError !== null) {
    code = typeof fetchError === 'object' ? (fetchError as { code?: unknown }).code : undefined;
    if (typeof code !== 'string' || code.length === 0)
      throw new Error(
        'fetchError: must be an object with a code (why the vulnerabilities are missing), or null',
      );
  }
  return {
    deviceId: parsed.value.id,
    machine: toDeviceRecord(listedMachine(parsed.value)),
    vulnerabilities: vulnerabilities as unknown[] | null | undefined,
    // The code only: the error's text (Microsoft's answer) is not the result's.
    fetchError: typeof code === 'string' ? { code } : undefined,
  };
}

/**
 * A device's vulnerability records read as the Defender client reads the per-device endpoint's
 * (`parseVulnerability`: field names in any case, the CVE id in upper case, the CVSS by `readCvss`), each one
 * it skips told to `skipped`. Null for null or absent records, and for records none of which could be read
 * (criticalCves missing, not 0).
 */
function readVulnerabilities(
  records: unknown[] | null | undefined,
  skipped: (index: number, reason: string) => void,
): VulnerabilityRecord[] | null {
  if (records === null || records === undefined) return null;
  const read: VulnerabilityRecord[] = [];
  records.forEach((record, index) => {
    const parsed = parseVulnerability(record);
    if (parsed.ok) read.push(parsed.value);
    else skipped(index, parsed.reason);
  });
  return read.length === 0 && records.length > 0 ? null : read;
}

function emptyCounts(): BandCounts {
  return Object.fromEntries(BANDS.map((band) => [band, 0])) as BandCounts;
}

/**
 * Joins lines into chunks and honours back-pressure, so a slow reader of stdout bounds memory. When the
 * reader goes away (`urs score | head`: EPIPE) it records that instead of crashing, and the command stops
 * reading: nobody is left to read the results.
 */
class ChunkedWriter {
  private pending = '';
  closed = false;

  constructor(private readonly stream: NodeJS.WritableStream) {
    stream.on('error', () => {
      this.closed = true;
    });
  }

  async write(line: string): Promise<void> {
    this.pending += `${line}\n`;
    if (this.pending.length >= CHUNK_CHARS) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.pending.length === 0 || this.closed) return;
    const chunk = this.pending;
    this.pending = '';
    if (!this.stream.write(chunk)) await this.drained();
  }

  /** Resolves on 'drain', or on 'close'/'error' (nothing more will drain), and removes its listeners. */
  private drained(): Promise<void> {
    const stream = this.stream;
    return new Promise((resolve) => {
      const done = (): void => {
        stream.off('drain', done);
        stream.off('close', done);
        stream.off('error', done);
        resolve();
      };
      stream.on('drain', done);
      stream.on('close', done);
      stream.on('error', done);
    });
  }
}

/**
 * ISO 8601 timestamps to epoch milliseconds, without Date.parse: the one reading of a device's `lastSeen` and
 * `firstSeen` (the Defender client's, which empties one it cannot read, the scoring model's, `urs score`'s). MDE writes `lastSeen` with 7 fractional
 * digits (`2024-01-08T11:04:02.1234567Z`, .NET ticks); ECMAScript only defines Date.parse for exactly 3,
 * so engines differ on more. This parser takes any number of fraction digits (truncated to the
 * millisecond; `subMillisecondOf` reads the rest), `T`, `t` or a space between date and time, `Z`, `±HH:MM`, `±HHMM` or `±HH` (no zone
 * means UTC, as MDE's are always UTC), and any year from 0000 (.NET's `DateTime.MinValue` is
 * `0001-01-01T00:00:00Z`, which Date.UTC would read as 1901). Returns NaN for anything else, including
 * impossible dates such as February 30th. Pure integer arithmetic, no allocation.
 */
export function parseTimestampMs(text: string): number {
  const n = text.length;
  if (n < 10 || text.charCodeAt(4) !== 45 || text.charCodeAt(7) !== 45) return NaN;
  const year = digits(text, 0, 4);
  const month = digits(text, 5, 2);
  const day = digits(text, 8, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return NaN;
  let ms = daysFromCivil(year, month, day) * 86_400_000;
  if (n === 10) return ms;

  const sep = text.charCodeAt(10);
  if ((sep !== 84 && sep !== 116 && sep !== 32) || n < 16 || text.charCodeAt(13) !== 58) return NaN;
  const hour = digits(text, 11, 2);
  const minute = digits(text, 14, 2);
  if (hour < 0 || hour > 23 || minute < 0 || minute > 59) return NaN;
  ms += hour * 3_600_000 + minute * 60_000;
  let i = 16;
  if (i < n && text.charCodeAt(i) === 58) {
    const second = digits(text, i + 1, 2);
    if (second < 0 || second > 59) return NaN;
    ms += second * 1000;
    i += 3;
    const mark = text.charCodeAt(i);
    if (i < n && (mark === 46 || mark === 44)) {
      i += 1;
      const start = i;
      let millis = 0;
      for (; i < n; i += 1) {
        const d = text.charCodeAt(i) - 48;
        if (d < 0 || d > 9) break;
        if (i - start < 3) millis = millis * 10 + d;
      }
      const taken = i - start;
      if (taken === 0) return NaN;
      ms += taken >= 3 ? millis : taken === 2 ? millis * 10 : millis * 100;
    }
  }
  if (i === n) return ms;
  const zone = text.charCodeAt(i);
  if (zone === 90 || zone === 122) return i + 1 === n ? ms : NaN;
  if (zone !== 43 && zone !== 45) return NaN;
  const offsetHours = digits(text, i + 1, 2);
  let offsetMinutes = 0;
  const rest = n - (i + 3);
  if (rest === 3 && text.charCodeAt(i + 3) === 58) offsetMinutes = digits(text, i + 4, 2);
  else if (rest === 2) offsetMinutes = digits(text, i + 3, 2);
  else if (rest !== 0) return NaN;
  if (offsetHours < 0 || offsetHours > 23 || offsetMinutes < 0 || offsetMinutes > 59) return NaN;
  const offsetMs = (offsetHours * 60 + offsetMinutes) * 60_000;
  return zone === 43 ? ms - offsetMs : ms + offsetMs;
}

/** Fraction digits past the millisecond that `subMillisecondOf` reads: to the picosecond, MDE's 100 ns and below. */
const SUB_MS_DIGITS = 9;

/**
 * The part of a timestamp `parseTimestampMs` cut off: the fraction's digits past the millisecond, as an
 * integer of SUB_MS_DIGITS digits (`…:02.1234567Z` → 456_700_000), 0 when there are none. Two of these
 * order the instants of one millisecond. Only for a text parseTimestampMs reads (not NaN).
 */
export function subMillisecondOf(text: string): number {
  // A fraction follows the seconds (`YYYY-MM-DDTHH:MM:SS.`); the digits of the millisecond come first.
  const mark = text.charCodeAt(19);
  if (mark !== 46 && mark !== 44) return 0;
  let value = 0;
  let ended = false;
  for (let i = 20; i < 23 + SUB_MS_DIGITS; i += 1) {
    const d = text.charCodeAt(i) - 48;
    if (!(d >= 0 && d <= 9)) ended = true;
    if (i >= 23) value = value * 10 + (ended ? 0 : d);
  }
  return value;
}

/** The non-negative integer in `count` decimal digits at `start`, or -1. */
function digits(text: string, start: number, count: number): number {
  if (start + count > text.length) return -1;
  let value = 0;
  for (let i = start; i < start + count; i += 1) {
    const d = text.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    value = value * 10 + d;
  }
  return value;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil), for years ≥ 0. */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

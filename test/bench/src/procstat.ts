import { readFileSync } from 'node:fs';

/** Memory and CPU of a running process, from /proc (Linux). */
export interface ProcessUsage {
  /** Peak resident set size so far (VmHWM), MB. */
  peakRssMb: number;
  /** Current resident set size (VmRSS), MB. */
  rssMb: number;
  /** User + system CPU time so far, seconds. */
  cpuSec: number;
}

/** `clock ticks per second` of /proc/<pid>/stat; 100 on every Linux the bench runs on (getconf CLK_TCK). */
const CLOCK_TICKS = 100;

export function parseStatus(text: string): { peakRssMb: number; rssMb: number } {
  const kb = (field: string): number =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { peakRssMb: kb('VmHWM') / 1024, rssMb: kb('VmRSS') / 1024 };
}

export function parseCpuSec(stat: string): number {
  // Fields after the command name (which may contain spaces), so split after the closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the line, i.e. 12 and 13 after "pid (comm) ".
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

export function processUsage(pid: number): ProcessUsage | null {
  try {
    const status = parseStatus(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { ...status, cpuSec: parseCpuSec(readFileSync(`/proc/${pid}/stat`, 'utf8')) };
  } catch {
    return null;
  }
}

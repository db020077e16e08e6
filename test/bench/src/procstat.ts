import { readFileSync } from 'node:fs';

/** Memory and CPU of a running process, from /proc (Linux). */
export interface ProcessUsage {
  /** Peak resident set size so far (VmHWM), MB. */
  peakRssMb: number;
  /** Current resident set size (VmRSS), MB. */
  rssMb: number;
  /** User + system CPU time so far, seconds. */
  cpuSec: number;
  /** Of it, system (kernel) time: system calls, socket I/O, page faults. */
  systemCpuSec: number;
  /**
   * Minor page faults so far: memory the process touched for the first time since the kernel gave it.
   * Each costs 1.3–16 µs of CPU on the 2-core build VM, depending on the day's host and on whether the guest
   * used that memory before (counted half as system and half as user time), so they show what fresh
   * allocations cost a process.
   */
  minorFaults: number;
}

/** `clock ticks per second` of /proc/<pid>/stat; 100 on every Linux the bench runs on (getconf CLK_TCK). */
const CLOCK_TICKS = 100;

export function parseStatus(text: string): { peakRssMb: number; rssMb: number } {
  const kb = (field: string): number =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { peakRssMb: kb('VmHWM') / 1024, rssMb: kb('VmRSS') / 1024 };
}

/** CPU time and page faults of a /proc/<pid>/stat line. */
export function parseStat(stat: string): Pick<ProcessUsage, 'cpuSec' | 'systemCpuSec' | 'minorFaults'> {
  // Fields after the command name (which may contain spaces), so split after the closing parenthesis:
  // minflt, utime and stime are fields 10, 14 and 15 of the line, i.e. 8, 12 and 13 after "pid (comm) ".
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const user = Number(fields[11]) / CLOCK_TICKS;
  const system = Number(fields[12]) / CLOCK_TICKS;
  return { cpuSec: user + system, systemCpuSec: system, minorFaults: Number(fields[7]) };
}

export function processUsage(pid: number): ProcessUsage | null {
  try {
    const status = parseStatus(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { ...status, ...parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8')) };
  } catch {
    return null;
  }
}

/** A process whose usage could not be read: unknown, not absent (it stays in every table, as "–"). */
const UNREAD: ProcessUsage = {
  peakRssMb: NaN,
  rssMb: NaN,
  cpuSec: NaN,
  systemCpuSec: NaN,
  minorFaults: NaN,
};

/**
 * Each service's usage once it went idle after the cycles. A service that died during the scenario fails it:
 * its peak memory and CPU are not known, and its work was not all done.
 */
export function usageAfterIdle(
  pipeline: { children: Map<string, { pid: number }>; crashed: () => string | undefined },
  read: (pid: number) => ProcessUsage | null = processUsage,
): Record<string, ProcessUsage> {
  const crash = pipeline.crashed();
  if (crash !== undefined) throw new Error(`a service died before its usage was read: ${crash}`);
  return Object.fromEntries([...pipeline.children].map(([name, child]) => [name, read(child.pid) ?? UNREAD]));
}

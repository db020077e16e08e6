// @ts-check
// Process, file and port helpers shared by the Kafka and Redis parts of the local stack.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Whether a process with this id exists (signal 0 only checks; EPERM still means it exists).
 * @param {number} pid
 */
export function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return /** @type {NodeJS.ErrnoException} */ (err).code === 'EPERM';
  }
}

/**
 * The command line of a live process, or undefined.
 * @param {number} pid
 */
export function commandLine(pid) {
  try {
    // /proc is exact and never truncated; ps is the fallback where /proc does not exist (macOS).
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (raw !== '') return raw.split('\0').join(' ').trim();
  } catch {
    // no /proc: fall through to ps
  }
  const out = spawnSync('ps', ['-o', 'args=', '-p', String(pid)], { encoding: 'utf8' });
  const text = (out.stdout ?? '').trim();
  return out.status === 0 && text !== '' ? text : undefined;
}

/**
 * The pid in `pidFile` when that process is alive AND its command line matches `marker` (contains
 * it, or satisfies it), so a recycled pid that now belongs to some other program is never mistaken
 * for (or killed as) ours.
 * @param {string} pidFile
 * @param {string | ((commandLine: string) => boolean)} marker
 * @returns {number | undefined}
 */
export function ownedPid(pidFile, marker) {
  let pid;
  try {
    pid = Number.parseInt(fs.readFileSync(pidFile, 'utf8').trim(), 10);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return undefined;
  const cmd = commandLine(pid);
  if (cmd === undefined) return undefined;
  return (typeof marker === 'string' ? cmd.includes(marker) : marker(cmd)) ? pid : undefined;
}

/**
 * Starts a long-running program detached from this process, output appended to `logFile`.
 * @param {string} command
 * @param {string[]} args
 * @param {{ logFile: string, pidFile: string, cwd: string }} options
 * @returns {number} the child's pid
 */
export function startDetached(command, args, { logFile, pidFile, cwd }) {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  const out = fs.openSync(logFile, 'a');
  const child = spawn(command, args, { cwd, detached: true, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  if (child.pid === undefined) throw new Error(`could not start ${command}`);
  child.unref();
  fs.writeFileSync(pidFile, `${child.pid}\n`);
  return child.pid;
}

/**
 * Sends SIGTERM, waits up to `graceMs` for the process to exit, then SIGKILLs it.
 * @param {number} pid
 * @param {number} graceMs
 */
export async function stopProcess(pid, graceMs) {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return;
    await sleep(200);
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
  while (isAlive(pid)) await sleep(100);
}

/**
 * Whether something accepts TCP connections on host:port.
 * @param {string} host
 * @param {number} port
 * @param {number} [timeoutMs] connect timeout in milliseconds; default 1000
 * @returns {Promise<boolean>}
 */
export function portAnswers(host, port, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (/** @type {boolean} */ ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Whether an executable is on PATH.
 * @param {string} command
 */
export function onPath(command) {
  return spawnSync(command, ['--version'], { stdio: 'ignore' }).error === undefined;
}

/**
 * Holds an exclusive lock file while `fn` runs, so two `stack:up` runs (two terminals, two jest
 * projects) never start two brokers. A lock left by a dead process is taken over.
 * @template T
 * @param {string} lockFile
 * @param {number} timeoutMs how long to wait for another holder, in milliseconds
 * @param {() => Promise<T>} fn
 * @returns {Promise<T>}
 */
export async function withLock(lockFile, timeoutMs, fn) {
  fs.mkdirSync(path.dirname(lockFile), { recursive: true });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      fs.writeFileSync(lockFile, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (err) {
      if (/** @type {NodeJS.ErrnoException} */ (err).code !== 'EEXIST') throw err;
      const holder = Number.parseInt(readOr(lockFile, ''), 10);
      if (!Number.isInteger(holder) || !isAlive(holder)) {
        fs.rmSync(lockFile, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`stack lock ${lockFile} held by pid ${holder}`);
      await sleep(250);
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lockFile, { force: true });
  }
}

/**
 * @param {string} file
 * @param {string} fallback
 */
export function readOr(file, fallback) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return fallback;
  }
}

/**
 * The last `lines` lines of a log file, for error messages.
 * @param {string} file
 * @param {number} lines
 */
export function tail(file, lines) {
  return readOr(file, '').split('\n').slice(-lines).join('\n');
}

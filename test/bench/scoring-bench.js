#!/usr/bin/env node
'use strict';
// Throughput of the scoring model, not a test: results per second of the pure scoreDevice on one core,
// and of `urs score` end to end (NDJSON in, NDJSON out, one process). Runs against the compiled
// packages: `npm run bench:scoring` builds them first.
//
//   node test/bench/scoring-bench.js [--devices N] [--seconds S]
//     --devices  NDJSON records for the end-to-end run (default 200000)
//     --seconds  duration of each timed round of the pure function (default 2; 3 rounds, median reported)

const { spawnSync } = require('node:child_process');
const { mkdtempSync, rmSync, writeFileSync, statSync } = require('node:fs');
const { cpus, loadavg, tmpdir } = require('node:os');
const { join } = require('node:path');
const { parseArgs } = require('node:util');
const {
  DEFAULT_PROFILE,
  compileProfile,
  scoreDevice,
  summariseVulnerabilities,
} = require('../../libs/scoring/dist');

const { values } = parseArgs({ options: { devices: { type: 'string' }, seconds: { type: 'string' } } });
const DEVICES = Number(values.devices ?? 200_000);
const SECONDS = Number(values.seconds ?? 2);
const NOW = '2024-01-10T12:00:00Z';
const NOW_MS = Date.parse(NOW);

/** A seeded generator (mulberry32), so every run scores the same fleet. */
function random(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const rand = random(42);
const pick = (values) => values[Math.floor(rand() * values.length)];

/** A machine record shaped like the API's, with its case variants, absent fields and 7 fractional digits. */
function machine(i) {
  const seenAgoMs = Math.floor(rand() * 20 * 86_400_000);
  const record = {
    id: i.toString(16).padStart(40, '0'),
    computerDnsName: `host-${i}.contoso.com`,
    firstSeen: '2023-06-01T08:00:00.1234567Z',
    lastSeen: `${new Date(NOW_MS - seenAgoMs).toISOString().slice(0, 19)}.1234567Z`,
    osPlatform: pick(['Windows11', 'Windows10', 'WindowsServer2019', 'Ubuntu']),
    version: '22H2',
    osBuild: 22621,
    lastIpAddress: '10.0.0.4',
    lastExternalIpAddress: '203.0.113.9',
    healthStatus: pick(['Active', 'Active', 'Active', 'Inactive', 'ImpairedCommunication', 'NoSensorData']),
    rbacGroupId: rand() < 0.5 ? 140 : '140',
    rbacGroupName: 'Laptops',
    riskScore: pick(['None', 'Informational', 'Low', 'Medium', 'High', 'high', 'Unknown']),
    exposureLevel: pick(['None', 'Low', 'Medium', 'High', 'medium']),
    isAadJoined: true,
    machineTags: ['finance'],
    onboardingStatus: pick(['Onboarded', 'Onboarded', 'onboarded', 'CanBeOnboarded']),
  };
  if (rand() < 0.6) record.defenderAvStatus = pick(['Updated', 'NotSupported', 'Disabled', 'NotReporting']);
  return record;
}

function vulnerabilities() {
  if (rand() < 0.05) return null;
  return Array.from({ length: Math.floor(rand() * 4) }, () => ({
    id: `CVE-2024-${Math.floor(rand() * 50)}`,
    name: 'CVE',
    severity: 'High',
    cvssV3: rand() < 0.1 ? null : Math.round(rand() * 100) / 10,
    exposedMachines: 3,
  }));
}

/**
 * Rates are given per second of wall time and per second of CPU time: the machine may be shared, and
 * CPU time is what one core spends whatever else runs beside it.
 */
function benchPureFunction() {
  const profile = compileProfile(DEFAULT_PROFILE);
  const fleet = Array.from({ length: 4096 }, (_, i) => {
    const vulns = vulnerabilities();
    const summary = vulns === null ? null : summariseVulnerabilities(vulns, profile.cvssThreshold);
    return { machine: machine(i), vulns, summary };
  });
  const measure = (field) => {
    let checksum = 0;
    const round = () => {
      let n = 0;
      const deadline = process.hrtime.bigint() + BigInt(Math.round(SECONDS * 1e9));
      const cpuStart = process.cpuUsage();
      const start = process.hrtime.bigint();
      let end = start;
      // Check the clock every 4096 results: reading it costs as much as a result.
      while (end < deadline) {
        for (let i = 0; i < 4096; i += 1) {
          const device = fleet[i];
          checksum += scoreDevice(device.machine, device[field], profile, NOW_MS).score;
        }
        n += 4096;
        end = process.hrtime.bigint();
      }
      const cpu = process.cpuUsage(cpuStart);
      return { wall: n / (Number(end - start) / 1e9), cpu: n / ((cpu.user + cpu.system) / 1e6) };
    };
    round(); // warm-up: let the JIT optimise the hot path
    const rounds = [round(), round(), round()];
    const median = (key) => rounds.map((r) => r[key]).sort((x, y) => x - y)[1];
    return { wall: median('wall'), cpu: median('cpu'), checksum };
  };
  return { raw: measure('vulns'), summary: measure('summary') };
}

function benchCli() {
  const dir = mkdtempSync(join(tmpdir(), 'urs-bench-'));
  try {
    const input = join(dir, 'devices.ndjson');
    const lines = [];
    for (let i = 0; i < DEVICES; i += 1)
      lines.push(JSON.stringify({ ...machine(i), vulnerabilities: vulnerabilities() }));
    writeFileSync(input, `${lines.join('\n')}\n`);
    const bytes = statSync(input).size;
    const run = (extra) => {
      const command = [
        process.execPath,
        join(__dirname, '../../libs/cli/bin/urs.js'),
        'score',
        '--now',
        NOW,
        ...extra,
      ]
        .map((arg) => `'${arg}'`)
        .join(' ');
      // bash's `time` reports the child's user and system CPU seconds, which Node cannot read for a child.
      const start = process.hrtime.bigint();
      const result = spawnSync(
        'bash',
        ['-c', `TIMEFORMAT='%U %S'; time ${command} < '${input}' > /dev/null`],
        {
          encoding: 'utf8',
        },
      );
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      if (result.status !== 0) throw new Error(`urs score exited ${result.status}: ${result.stderr}`);
      const [user, system] = result.stderr.trim().split('\n').at(-1).split(' ').map(Number);
      return { wall: DEVICES / seconds, cpu: DEVICES / (user + system) };
    };
    return { bytes, full: run([]), summary: run(['--summary']) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Guards the checksum against an engine that would drop results nobody reads. */
function used(result) {
  if (!Number.isFinite(result.checksum)) throw new Error('no results');
  return result;
}

const fmt = ({ wall, cpu }) =>
  `${Math.round(wall).toLocaleString('en-US')} results/s (${Math.round(cpu).toLocaleString('en-US')} per CPU-second)`;
console.log(
  `node ${process.version}, load average ${loadavg()[0].toFixed(2)} on ${cpus().length} cores (shared)`,
);
const pure = benchPureFunction();
console.log(`scoreDevice, raw vulnerability lists (0-3 per device): ${fmt(used(pure.raw))}`);
console.log(`scoreDevice, vulnerability summaries:                ${fmt(used(pure.summary))}`);
const cli = benchCli();
const size = `${DEVICES.toLocaleString('en-US')} devices, ${(cli.bytes / 1e6).toFixed(0)} MB NDJSON`;
console.log(`urs score end to end (${size}): ${fmt(cli.full)}`);
console.log(`urs score --summary end to end:                  ${fmt(cli.summary)}`);

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { toDeviceRecord } from '@urs/contracts';
import { summariseVulnerabilities as summarise } from '@urs/contracts/vulnerabilities';
import { parseMachine, parseVulnerability } from '@urs/defender';
import { DEFAULT_PROFILE, profileHash, scoreDevice } from '@urs/scoring';
import { scoreCommand } from '../src/commands/score';
import { runCommand, type CommandRun } from './support/run';

const NOW = '2024-01-10T12:00:00Z';

interface Run extends CommandRun {
  lines: Array<Record<string, unknown>>;
}

async function run(args: string[], input: string): Promise<Run> {
  const result = await runCommand(scoreCommand, args, { stdin: Readable.from([input]) });
  const lines = result.stdout
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => (line.startsWith('{') ? (JSON.parse(line) as Record<string, unknown>) : { text: line }));
  return { ...result, lines };
}

const ndjson = (...records: unknown[]): string =>
  records.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n';

const clean = {
  riskScore: 'None',
  exposureLevel: 'Low',
  defenderAvStatus: 'Updated',
  onboardingStatus: 'Onboarded',
  healthStatus: 'Active',
  lastSeen: '2024-01-10T11:04:02.1234567Z',
  rbacGroupId: 140,
};
const critical = (n: number): unknown[] =>
  Array.from({ length: n }, (_, i) => ({ id: `CVE-2024-${i}`, cvssV3: 9.8, severity: 'Critical' }));

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'urs-score-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function profileFile(name: string, content: unknown): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

describe('scoreCommand', () => {
  it('should write one result per device with the model of scoring.md', async () => {
    const input = ndjson(
      { id: 'clean', ...clean, vulnerabilities: [] },
      { id: 'high', ...clean, riskScore: 'high', vulnerabilities: [] },
      { id: 'exposed', ...clean, exposureLevel: 'Medium', vulnerabilities: critical(1) },
      {
        id: 'stale',
        ...clean,
        healthStatus: 'Inactive',
        lastSeen: '2023-12-21T12:00:00.0000000Z',
        vulnerabilities: [],
      },
    );
    const result = await run(['--now', NOW], input);
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    expect(result.lines.map((l) => [l.deviceId, l.score, l.band])).toEqual([
      ['clean', 0, 'Trustworthy'],
      ['high', 70, 'Suspicious'],
      ['exposed', 36, 'Low Risk'],
      ['stale', 30, 'Low Risk'],
    ]);
    expect(result.lines[2]).toEqual({
      deviceId: 'exposed',
      score: 36,
      band: 'Low Risk',
      criticalScore: 0.4,
      operationalScore: 0.25,
      contributions: [
        { group: 'critical', signal: 'exposureLevel', value: 'Medium', points: 40, assumed: false },
        { group: 'operational', signal: 'inactivity', value: 'lt1d', points: 0, assumed: false },
        { group: 'operational', signal: 'criticalCves', value: 1, points: 25, assumed: false },
      ],
      missing: [],
      // What the pipeline's record carries too: the values scored, when the device reported them, and the
      // profile that scored them.
      signals: {
        riskScore: { value: 'None', at: clean.lastSeen },
        exposureLevel: { value: 'Medium', at: clean.lastSeen },
        avStatus: { value: 'Updated', at: clean.lastSeen },
        onboarding: { value: 'Onboarded', at: clean.lastSeen },
        healthStatus: { value: 'Active', at: clean.lastSeen },
        inactivity: { value: 0, at: clean.lastSeen },
        criticalCves: { value: 1, at: null },
      },
      profileHash: profileHash(DEFAULT_PROFILE),
    });
  });

  it('should report vulnerabilities that are null or absent as a missing signal', async () => {
    const result = await run(
      ['--now', NOW],
      ndjson({ id: 'a', ...clean, vulnerabilities: null }, { id: 'b', ...clean }),
    );
    expect(result.code).toBe(0);
    expect(result.lines.map((l) => l.missing)).toEqual([['criticalCves'], ['criticalCves']]);
  });

  it('should say why each missing signal is missing, with the codes of the pipeline, and nothing of reasons when none is', async () => {
    const result = await run(
      ['--now', NOW],
      ndjson(
        // Vulnerabilities not given, no reason either; the device list gave no health status.
        { id: 'a', ...clean, healthStatus: 'Unknown', vulnerabilities: null },
        // The reason `urs defender devices` writes beside a null list (a code; any text beside it is not shown).
        {
          id: 'b',
          ...clean,
          vulnerabilities: null,
          fetchError: { code: 'DEFENDER_NOT_FOUND', message: 'Microsoft answered 404' },
        },
        { id: 'c', ...clean, vulnerabilities: null, fetchError: { code: 'DEFENDER_THROTTLED' } },
        // Rows given, none of them readable.
        { id: 'd', ...clean, lastSeen: 'yesterday', vulnerabilities: [{ id: 'CVE-1', cvssV3: 'n/a' }] },
        { id: 'e', ...clean, vulnerabilities: [] },
      ),
    );
    expect(result.code).toBe(0);
    expect(result.lines.map((l) => [l.deviceId, l.missing, l.missingReasons])).toEqual([
      ['a', ['healthStatus', 'criticalCves'], { healthStatus: 'NOT_REPORTED', criticalCves: 'UNKNOWN' }],
      ['b', ['criticalCves'], { criticalCves: 'DEFENDER_NOT_FOUND' }],
      ['c', ['criticalCves'], { criticalCves: 'FETCH_FAILED' }],
      [
        'd',
        ['inactivity', 'criticalCves'],
        { inactivity: 'NOT_REPORTED', criticalCves: 'DEFENDER_UNREADABLE_RECORDS' },
      ],
      ['e', [], undefined],
    ]);
    expect(result.lines[4]).not.toHaveProperty('missingReasons');
    expect(result.stdout).not.toContain('Microsoft answered 404');
  });

  it('should name a line whose fetchError has no code, and score the others', async () => {
    const result = await run(
      ['--now', NOW],
      ndjson(
        { id: 'a', ...clean, vulnerabilities: null, fetchError: 'throttled' },
        { id: 'b', ...clean, vulnerabilities: null, fetchError: null },
      ),
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      'urs score: line 1: fetchError: must be an object with a code (why the vulnerabilities are missing), or null\n',
    );
    expect(result.lines).toEqual([
      expect.objectContaining({ deviceId: 'b', missingReasons: { criticalCves: 'UNKNOWN' } }),
    ]);
  });

  it('should read CVSS scores as the pipeline does: numeric text counts, an unreadable row is skipped', async () => {
    const result = await run(
      ['--now', NOW],
      ndjson({
        id: 'a',
        ...clean,
        vulnerabilities: [
          { id: 'CVE-1', cvssV3: '9.8' },
          { id: 'CVE-2', cvssV3: 11 },
          { id: 'CVE-3', cvssV3: 'high' },
        ],
      }),
    );
    expect(result.code).toBe(0);
    expect(result.lines[0]?.missing).toEqual([]);
    expect(result.lines[0]?.contributions).toContainEqual(
      expect.objectContaining({ signal: 'criticalCves', value: 1, points: 25 }),
    );
    expect(result.stderr).toContain('urs score: line 1: vulnerabilities[1] skipped: cvssV3 must be');
    expect(result.stderr).toContain('urs score: line 1: vulnerabilities[2] skipped: cvssV3 must be');
  });

  it('should skip a vulnerability without an id, or not an object, as the pipeline does, and score the line', async () => {
    const result = await run(
      ['--now', NOW],
      ndjson({ id: 'a', ...clean, vulnerabilities: [{ cvssV3: 9.8 }, 7, ...critical(1)] }),
    );
    expect(result.code).toBe(0);
    expect(result.lines[0]?.contributions).toContainEqual(
      expect.objectContaining({ signal: 'criticalCves', value: 1, points: 25 }),
    );
    expect(result.stderr).toBe(
      "urs score: line 1: vulnerabilities[0] skipped: id must have required property 'id'\n" +
        'urs score: line 1: vulnerabilities[1] skipped: record is not an object\n',
    );
  });

  it('should count the skipped vulnerabilities in the summary, 1e1 and 0x5 among them', async () => {
    const result = await run(
      ['--now', NOW, '--summary'],
      ndjson(
        { id: 'a', ...clean, vulnerabilities: [{ id: 'CVE-1', cvssV3: '1e1' }, ...critical(1)] },
        { id: 'b', ...clean, vulnerabilities: [{ id: 'CVE-2', cvssV3: ' 0x5' }] },
      ),
    );
    expect(result.code).toBe(0);
    expect(result.lines).toEqual([
      expect.objectContaining({ kind: 'summary', devices: 2, failed: 0, skippedVulnerabilities: 2 }),
    ]);
    expect(result.stderr).toContain('line 1: vulnerabilities[0] skipped: cvssV3 must be');
    expect(result.stderr).toContain('line 2: vulnerabilities[0] skipped: cvssV3 must be');
  });

  it('should read a raw record as the pipeline reads it: keys in any case, its lastSeen, a non-text onboardingStatus', async () => {
    const raw: Record<string, unknown>[] = [
      {
        Id: 'upper',
        riskscore: 'high',
        EXPOSURELEVEL: 'Medium',
        DefenderAVStatus: 'disabled',
        onboardingstatus: 'Onboarded',
        HEALTHSTATUS: 'Inactive',
        LASTSEEN: '2024-01-05T11:04:02+05',
        vulnerabilities: [
          { ID: 'cve-2024-1', CVSSv3: 9.8 },
          { Id: 'CVE-2024-1', cvssv3: '7.5' },
          { id: 'CVE-2024-2', CvssV3: ' 9.1 ' },
        ],
      },
      { id: 'comma', ...clean, lastSeen: '2024-01-02T10:00:00,5Z', vulnerabilities: critical(2) },
      { id: 'numeric', ...clean, onboardingStatus: 1, vulnerabilities: [] },
      { id: 'spoken', ...clean, lastSeen: 'Jan 8 2024', vulnerabilities: [] },
    ];
    const worst = await profileFile('parity-worst.json', { missingSignals: 'assume-worst' });
    for (const profile of [
      DEFAULT_PROFILE,
      { ...DEFAULT_PROFILE, missingSignals: 'assume-worst' as const },
    ]) {
      const args = ['--now', NOW, ...(profile === DEFAULT_PROFILE ? [] : ['--profile', worst])];
      const result = await run(args, ndjson(...raw));
      expect(result.code).toBe(0);
      expect(result.lines.map((line) => line.deviceId)).toEqual(['upper', 'comma', 'numeric', 'spoken']);
      // The pipeline: the listing's parseMachine cut down to its DeviceRecord, the per-device endpoint's
      // parseVulnerability summarised by the vuln-fetcher, the scorer's count.
      raw.forEach((record, index) => {
        const parsed = parseMachine(structuredClone(record));
        if (!parsed.ok) throw new Error(parsed.reason);
        const list = (record.vulnerabilities as unknown[]).flatMap((item) => {
          const vulnerability = parseVulnerability(structuredClone(item));
          return vulnerability.ok ? [vulnerability.value] : [];
        });
        const threshold = profile.operational.criticalCves.cvssThreshold;
        const { criticalCveCount } = summarise(list, threshold);
        const expected = scoreDevice(toDeviceRecord(parsed.value), { criticalCveCount }, profile, NOW);
        const line = result.lines[index] as Record<string, unknown>;
        expect({ score: line.score, band: line.band, missing: line.missing }).toEqual({
          score: expected.score,
          band: expected.band,
          missing: expected.missing,
        });
        expect(line.contributions).toEqual(expected.contributions);
      });
    }
  });

  it('should score a device none of whose vulnerabilities could be read with criticalCves missing', async () => {
    const file = await profileFile('worst.json', { missingSignals: 'assume-worst' });
    const result = await run(
      ['--profile', file, '--now', NOW],
      ndjson({
        id: 'a',
        ...clean,
        vulnerabilities: [
          { id: 'CVE-1', cvssV3: 12 },
          { id: 'CVE-2', cvssV3: 'n/a' },
        ],
      }),
    );
    expect(result.code).toBe(0);
    expect(result.lines[0]?.missing).toEqual(['criticalCves']);
    expect(result.lines[0]?.contributions).toContainEqual(
      expect.objectContaining({ signal: 'criticalCves', points: 100, assumed: true }),
    );
  });

  it('should name each bad line on stderr, score the others and exit 1', async () => {
    const input = ndjson(
      { id: 'first', ...clean, vulnerabilities: [] },
      '{"id": "broken"',
      '',
      '[1, 2]',
      { ...clean },
      { id: 'bad-vulns-type', ...clean, vulnerabilities: 'none' },
      { id: 'last', ...clean, riskScore: 'Medium', vulnerabilities: [] },
    );
    const result = await run(['--now', NOW], input);
    expect(result.code).toBe(1);
    expect(result.lines.map((l) => l.deviceId)).toEqual(['first', 'last']);
    const errors = result.stderr.trim().split('\n');
    expect(errors).toHaveLength(4);
    expect(errors[0]).toMatch(/^urs score: line 2: not valid JSON/);
    expect(errors[1]).toBe('urs score: line 4: must be a JSON object (an MDE machine record)');
    expect(errors[2]).toBe(
      "urs score: line 5: not a machine record the pipeline reads: id must have required property 'id'",
    );
    expect(errors[3]).toMatch(/^urs score: line 6: vulnerabilities: must be an array/);
  });

  it('should score with the tenant profile given by --profile', async () => {
    const file = await profileFile('tenant.json', {
      weights: { criticalRisk: 100, operational: 0 },
      critical: { riskScore: { High: 55 } },
    });
    const result = await run(
      ['--profile', file, '--now', NOW],
      ndjson({ id: 'a', ...clean, riskScore: 'High', vulnerabilities: critical(3) }),
    );
    expect(result.code).toBe(0);
    expect(result.lines[0]).toMatchObject({
      score: 55,
      band: 'Moderate Risk',
      criticalScore: 0.55,
      operationalScore: 0.75,
    });
  });

  it.each([
    [
      'invalid.json',
      { weights: { criticalRisk: 80, operational: 30 } },
      'profile.weights: criticalRisk + operational must total exactly 100',
    ],
    [
      'points.json',
      { critical: { riskScore: { High: 120 } } },
      'profile.critical.riskScore.High: must be an integer from 0 to 100 (got 120)',
    ],
    ['unknown.json', { critical: { riskscore: {} } }, 'profile.critical.riskscore: unknown key'],
    ['syntax.json', '{"weights":', 'the file given is not valid JSON'],
  ])('should exit 2 with the reason for an invalid profile (%s)', async (name, content, reason) => {
    const file = await profileFile(name, content);
    const result = await run(['--profile', file], ndjson({ id: 'a', ...clean }));
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain('urs score: --profile: ');
    expect(result.stderr).toContain(reason);
  });

  it('should exit 2 for a profile file that cannot be read, a bad --now or an unknown option', async () => {
    expect((await run(['--profile', join(dir, 'absent.json')], '')).stderr).toMatch(
      /^urs score: --profile: cannot read the file given \(ENOENT\)/,
    );
    const badNow = await run(['--now', 'yesterday'], '');
    expect(badNow.code).toBe(2);
    expect(badNow.stderr).toContain(
      '--now: must be an ISO 8601 time such as 2024-01-08T11:04:02Z (not shown)',
    );
    expect((await run(['--verbose'], '')).code).toBe(2);
    expect((await run(['stray'], '')).code).toBe(2);
  });

  it('should print usage for --help', async () => {
    const result = await run(['--help'], '');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^usage: urs score/);
  });

  it('should print the band distribution with --summary', async () => {
    const input = ndjson(
      { id: 'a', ...clean, vulnerabilities: [] },
      { id: 'b', ...clean, vulnerabilities: [] },
      { id: 'c', ...clean, riskScore: 'High', vulnerabilities: [] },
      { id: 'd', ...clean, riskScore: 'High', vulnerabilities: critical(4) },
      'oops',
    );
    const result = await run(['--summary', '--now', NOW], input);
    expect(result.code).toBe(1);
    expect(result.lines).toEqual([
      {
        kind: 'summary',
        devices: 4,
        failed: 1,
        skippedVulnerabilities: 0,
        profileHash: expect.stringMatching(/^[0-9a-f]{64}$/),
        bands: { Trustworthy: 2, 'Low Risk': 0, 'Moderate Risk': 0, Suspicious: 1, 'High Risk': 1 },
      },
    ]);
  });

  it('should list the devices whose band a new profile changes with --compare', async () => {
    const proposed = await profileFile('proposed.json', {
      critical: { riskScore: { Medium: 90 } },
      missingSignals: 'assume-worst',
    });
    const input = ndjson(
      { id: 'clean', ...clean, vulnerabilities: [] },
      { id: 'medium', ...clean, riskScore: 'Medium', vulnerabilities: [] },
      { id: 'unfetched', ...clean, vulnerabilities: null },
      { id: 'high', ...clean, riskScore: 'High', vulnerabilities: [] },
    );
    const result = await run(['--now', NOW, '--compare', proposed], input);
    expect(result.code).toBe(0);
    expect(result.lines).toEqual([
      {
        kind: 'change',
        deviceId: 'medium',
        from: { score: 35, band: 'Low Risk' },
        to: { score: 63, band: 'Suspicious' },
      },
      {
        kind: 'change',
        deviceId: 'unfetched',
        from: { score: 0, band: 'Trustworthy' },
        to: { score: 30, band: 'Low Risk' },
      },
      {
        kind: 'summary',
        devices: 4,
        failed: 0,
        skippedVulnerabilities: 0,
        changed: 2,
        profileHash: { from: expect.any(String), to: expect.any(String) },
        bands: {
          from: { Trustworthy: 2, 'Low Risk': 1, 'Moderate Risk': 0, Suspicious: 1, 'High Risk': 0 },
          to: { Trustworthy: 1, 'Low Risk': 1, 'Moderate Risk': 0, Suspicious: 2, 'High Risk': 0 },
        },
      },
    ]);
    const summaryOnly = await run(['--now', NOW, '--compare', proposed, '--summary'], input);
    expect(summaryOnly.lines).toEqual([result.lines[2]]);
  });

  it.each([
    ['a long option', (secret: string) => [`--${secret}`]],
    ['a long option with a value', (secret: string) => ['--summary', `--${secret}=x`]],
    ['a short option', (secret: string) => ['--summary', `-${secret}`]],
    ['a stray argument', (secret: string) => ['--summary', secret]],
    ['an argument after --', (secret: string) => ['--summary', '--', secret]],
  ])(
    'should not echo an unknown option or a stray argument, naming its position instead (%s)',
    async (_, given) => {
      const secret = `S3cr3t${randomUUID().replace(/-/g, '')}`;
      const argv = given(secret);
      const result = await run(argv, '');
      expect(result.code).toBe(2);
      const position = argv.findIndex((arg) => arg.includes(secret)) + 1;
      expect(result.stderr).toMatch(
        new RegExp(`^urs score: (unknown option|unexpected argument) \\(argument ${position}, not shown\\)`),
      );
      expect(result.stderr).not.toMatch(/'-/);
      expect(result.stderr).not.toContain(secret);
    },
  );

  it.each([
    ['--now', (secret: string) => ['--now', secret]],
    ['--now=', (secret: string) => [`--now=${secret}`]],
    ['a --profile file that is not there', (secret: string) => ['--profile', join(dir, secret)]],
    ['a --compare file that is not there', (secret: string) => ['--compare', join(dir, secret)]],
    ['a --profile file holding no JSON', (secret: string) => ['--profile', join(dir, `${secret}.txt`)]],
  ])(
    'should not echo a value given as a time or a path, naming the option and the rule instead (%s)',
    async (_, given) => {
      const secret = `S3cr3t${randomUUID().replace(/-/g, '')}`;
      // A secret's file given where the profile belongs: its text must not be echoed either.
      await writeFile(join(dir, `${secret}.txt`), secret);
      const argv = given(secret);
      const result = await run(argv, '');
      expect(result.code).toBe(2);
      const option = (argv[0] as string).replace(/=.*/, '');
      expect(result.stderr).toMatch(new RegExp(`^urs score: ${option}: `));
      expect(result.stderr).not.toContain(secret);
      expect(result.stdout).not.toContain(secret);
    },
  );

  it('should exit 2 when the --compare profile is invalid', async () => {
    const bad = await profileFile('bad-compare.json', { missingSignals: 'never' });
    const result = await run(['--compare', bad], ndjson({ id: 'a', ...clean }));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('profile.missingSignals: must be one of "ignore", "assume-worst"');
  });

  it('should stream many lines through and accept CRLF line ends', async () => {
    const records = Array.from({ length: 5000 }, (_, i) =>
      JSON.stringify({ id: `d${i}`, ...clean, riskScore: i % 2 ? 'High' : 'None', vulnerabilities: [] }),
    );
    const result = await run(['--now', NOW], records.join('\r\n'));
    expect(result.code).toBe(0);
    expect(result.lines).toHaveLength(5000);
    expect(result.lines[4999]).toMatchObject({ deviceId: 'd4999', score: 70 });
  });

  it('should stop without throwing when the reader of stdout goes away (EPIPE)', async () => {
    const stdout = new Writable({
      write(_chunk, _encoding, callback) {
        callback(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
      },
    });
    const record = JSON.stringify({ id: 'd', ...clean, vulnerabilities: [] });
    const input = Array.from({ length: 2000 }, () => record).join('\n');
    const stderr = new PassThrough();
    const code = await scoreCommand(['--now', NOW], {
      stdin: Readable.from([input]),
      stdout,
      stderr,
      env: {},
    });
    expect(code).toBe(0);
  });

  it('should wait for a slow reader of stdout and leave no listeners behind', async () => {
    const stdout = new PassThrough({ highWaterMark: 1024 });
    let received = '';
    const reading = (async () => {
      for await (const chunk of stdout) {
        received += String(chunk);
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    const record = JSON.stringify({ id: 'd', ...clean, vulnerabilities: [] });
    const input = Array.from({ length: 3000 }, () => record).join('\n');
    const listeners = (): number => stdout.listenerCount('drain') + stdout.listenerCount('close');
    const before = listeners();
    const code = await scoreCommand(['--now', NOW], {
      stdin: Readable.from([input]),
      stdout,
      stderr: new PassThrough(),
      env: {},
    });
    const after = listeners();
    stdout.end();
    await reading;
    expect(code).toBe(0);
    expect(received.trim().split('\n')).toHaveLength(3000);
    expect(after).toBe(before);
  });
});

import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { readCvss, summariseVulnerabilities } from '../src/vulnerabilities';

const ROOT = join(__dirname, '../../..');

describe('@urs/contracts/vulnerabilities', () => {
  it('readCvss should find text Number() reads but the rule does not (1e1, 0x5) unreadable', () => {
    expect(['1e1', ' 0x5', '0b1', '5.', '.5'].map(readCvss)).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
    expect(['9.8', ' 5 ', '', null].map(readCvss)).toEqual([9.8, 5, null, null]);
  });

  it('summariseVulnerabilities should count each CVE once at its highest score, unscored last', () => {
    const list = [
      { id: 'CVE-2', cvssV3: null },
      { id: 'CVE-1', cvssV3: 9.1 },
      { id: 'CVE-1', cvssV3: 9.8 },
      { id: 'CVE-3', cvssV3: 4 },
    ];
    expect(summariseVulnerabilities(list, 9)).toEqual({
      criticalCveCount: 1,
      totalCveCount: 3,
      maxCvss: 9.8,
      cvssThreshold: 9,
      topCveIds: ['CVE-1', 'CVE-3', 'CVE-2'],
    });
  });

  it('loads, compiled, alone: no schema compiler, no scoring model (the export fold thread takes it)', () => {
    const loaded = execFileSync(
      process.execPath,
      [
        '-e',
        `require('@urs/contracts/vulnerabilities');
         require('./services/vuln-fetcher/dist/summarise');
         console.log(JSON.stringify(Object.keys(require.cache)));`,
      ],
      { cwd: ROOT, encoding: 'utf8' },
    );
    const files = (JSON.parse(loaded) as string[]).filter(
      (file) => !file.includes('/services/vuln-fetcher/'),
    );
    expect(files.map((file) => file.split('/').slice(-3).join('/')).sort()).toEqual([
      'contracts/dist/vulnerabilities.js',
    ]);
  });
});

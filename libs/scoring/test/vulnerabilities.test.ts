import { ScoringError, summariseVulnerabilities } from '@urs/scoring';
import type { VulnerabilitySummary } from '@urs/scoring';
import { vulnerability } from './fixtures';

describe('summariseVulnerabilities', () => {
  it('should count distinct critical CVEs and name the top ones, highest CVSS first', () => {
    const list = [
      vulnerability('CVE-2024-9', 9.8),
      vulnerability('CVE-2023-1', 9.0),
      vulnerability('CVE-2024-9', 9.8),
      vulnerability('CVE-2022-5', 8.99),
      vulnerability('CVE-2021-7', null),
      vulnerability('CVE-2019-3', 9.0),
      { Id: 'CVE-2020-1', CvssV3: '10' },
    ];
    expect(summariseVulnerabilities(list, 9.0)).toEqual({
      criticalCveCount: 4,
      totalCveCount: 6,
      maxCvss: 10,
      cvssThreshold: 9.0,
      topCveIds: ['CVE-2020-1', 'CVE-2024-9', 'CVE-2019-3', 'CVE-2023-1', 'CVE-2022-5', 'CVE-2021-7'],
    });
  });

  it('should take the highest score of a CVE listed with several (and with none)', () => {
    const list = [vulnerability('CVE-1', null), vulnerability('CVE-1', 8.0), vulnerability('CVE-1', 9.1)];
    expect(summariseVulnerabilities(list, 9.0)).toMatchObject({
      criticalCveCount: 1,
      totalCveCount: 1,
      maxCvss: 9.1,
    });
  });

  it('should name at most 10 CVEs', () => {
    const list = Array.from({ length: 25 }, (_, i) => vulnerability(`CVE-2024-${100 + i}`, i / 10 + 7));
    const summary = summariseVulnerabilities(list, 9.0) as VulnerabilitySummary;
    expect(summary.topCveIds).toHaveLength(10);
    expect(summary.topCveIds[0]).toBe('CVE-2024-124');
    expect(summary.criticalCveCount).toBe(5);
  });

  it('should summarise an empty list', () => {
    expect(summariseVulnerabilities([], 7)).toEqual({
      criticalCveCount: 0,
      totalCveCount: 0,
      maxCvss: null,
      cvssThreshold: 7,
      topCveIds: [],
    });
  });

  it('should reject what is not a list', () => {
    expect(() => summariseVulnerabilities({} as never, 9)).toThrow(ScoringError);
  });

  it('should skip the records the pipeline skips, naming each, and give null when none could be read', () => {
    const skipped: string[] = [];
    const list = [
      { id: '' },
      { id: 'CVE-1', cvssV3: 'high' },
      { id: 'CVE-2', cvssV3: '1e1' },
      null,
      vulnerability('CVE-3', 9.5),
    ];
    expect(
      summariseVulnerabilities(list, 9, (index, reason) => skipped.push(`${index}: ${reason}`)),
    ).toMatchObject({ criticalCveCount: 1, totalCveCount: 1, topCveIds: ['CVE-3'] });
    expect(skipped).toEqual([
      '0: id must be a non-empty string (the CVE id)',
      '1: cvssV3 must be a number from 0 to 10, numeric text or null (got "high")',
      '2: cvssV3 must be a number from 0 to 10, numeric text or null (got "1e1")',
      '3: record is not an object',
    ]);
    expect(summariseVulnerabilities([{ id: 'CVE-1', cvssV3: ' 0x5' }], 9)).toBeNull();
  });
});

describe('summariseVulnerabilities criticalCveCount', () => {
  it('should count distinct ids at or above the threshold', () => {
    const list = ['A', 'B', 'A', 'C', 'B', 'D'].map((id, i) => vulnerability(id, i === 5 ? 5 : 9.5));
    expect(summariseVulnerabilities(list, 9)?.criticalCveCount).toBe(3);
    expect(summariseVulnerabilities(list, 9.6)?.criticalCveCount).toBe(0);
    expect(summariseVulnerabilities(list, 0)?.criticalCveCount).toBe(4);
  });

  it('should count a CVE id sent in two cases once, as the pipeline reads it (upper case)', () => {
    const list = [vulnerability('CVE-2024-0001', 9.8), vulnerability('cve-2024-0001', 9.8)];
    expect(summariseVulnerabilities(list, 9)).toMatchObject({
      criticalCveCount: 1,
      topCveIds: ['CVE-2024-0001'],
    });
  });
});

import { ScoringError, countCriticalCves, summariseVulnerabilities } from '@urs/scoring';
import { vulnerability } from './fixtures';

describe('summariseVulnerabilities', () => {
  it('should list the distinct critical CVE ids sorted, with counts and the highest score', () => {
    const list = [
      vulnerability('CVE-2024-9', 9.8),
      vulnerability('CVE-2023-1', 9.0),
      vulnerability('CVE-2024-9', 9.8),
      vulnerability('CVE-2022-5', 8.99),
      vulnerability('CVE-2021-7', null),
      { Id: 'CVE-2020-1', CvssV3: '10' },
    ];
    expect(summariseVulnerabilities(list, 9.0, '2024-01-10T11:00:00Z')).toEqual({
      criticalCveIds: ['CVE-2020-1', 'CVE-2023-1', 'CVE-2024-9'],
      criticalCveCount: 3,
      cveCount: 5,
      maxCvss: 10,
      cvssThreshold: 9.0,
      fetchedAt: '2024-01-10T11:00:00Z',
    });
  });

  it('should summarise an empty list', () => {
    expect(summariseVulnerabilities([], 7)).toEqual({
      criticalCveIds: [],
      criticalCveCount: 0,
      cveCount: 0,
      maxCvss: null,
      cvssThreshold: 7,
    });
  });

  it('should reject what is not a list, naming the field', () => {
    expect(() => summariseVulnerabilities({} as never, 9)).toThrow(ScoringError);
    expect(() => summariseVulnerabilities([{ id: '' }], 9)).toThrow(
      'vulnerabilities[0].id: must be a non-empty string',
    );
    expect(() => summariseVulnerabilities([{ id: 'CVE-1', cvssV3: 'high' }], 9)).toThrow(
      'vulnerabilities[0].cvssV3',
    );
  });
});

describe('countCriticalCves', () => {
  it('should count distinct ids at or above the threshold', () => {
    const list = ['A', 'B', 'A', 'C', 'B', 'D'].map((id, i) => vulnerability(id, i === 5 ? 5 : 9.5));
    expect(countCriticalCves(list, 9)).toBe(3);
    expect(countCriticalCves(list, 9.6)).toBe(0);
    expect(countCriticalCves(list, 0)).toBe(4);
  });
});

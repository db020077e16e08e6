import { BANDS, ScoringError, bandOf } from '@urs/scoring';

describe('bandOf', () => {
  it.each([
    [0, 'Trustworthy'],
    [20, 'Trustworthy'],
    [21, 'Low Risk'],
    [40, 'Low Risk'],
    [41, 'Moderate Risk'],
    [60, 'Moderate Risk'],
    [61, 'Suspicious'],
    [80, 'Suspicious'],
    [81, 'High Risk'],
    [100, 'High Risk'],
  ])('should put %i in %s', (score, band) => {
    expect(bandOf(score)).toBe(band);
  });

  it.each([-1, 101, 20.5, Number.NaN])('should reject %p', (score) => {
    expect(() => bandOf(score)).toThrow(ScoringError);
  });

  it('should list the vendor labels lowest risk first', () => {
    expect(BANDS).toEqual(['Trustworthy', 'Low Risk', 'Moderate Risk', 'Suspicious', 'High Risk']);
  });
});

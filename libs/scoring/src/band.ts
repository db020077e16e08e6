import { ScoringError } from './errors';

/** The vendor's five bands, lowest risk first. VMS policies match these exact labels. */
export const BANDS = ['Trustworthy', 'Low Risk', 'Moderate Risk', 'Suspicious', 'High Risk'] as const;
export type Band = (typeof BANDS)[number];

/** The band of a score: 0–20 Trustworthy, 21–40 Low Risk, 41–60 Moderate Risk, 61–80 Suspicious, 81–100 High Risk. */
export function bandOf(score: number): Band {
  if (!Number.isInteger(score) || score < 0 || score > 100) {
    throw new ScoringError('SCORE_INVALID', `score: must be an integer from 0 to 100 (got ${score})`);
  }
  if (score <= 20) return 'Trustworthy';
  if (score <= 40) return 'Low Risk';
  if (score <= 60) return 'Moderate Risk';
  if (score <= 80) return 'Suspicious';
  return 'High Risk';
}

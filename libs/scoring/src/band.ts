import { BAND_SCORES, type Band } from '@urs/contracts';
import { ScoringError } from './errors';

/** The band of a score: 0–20 Trustworthy, 21–40 Low Risk, 41–60 Moderate Risk, 61–80 Suspicious, 81–100 High Risk. */
export function bandOf(score: number): Band {
  const range = BAND_SCORES.find(({ min, max }) => Number.isInteger(score) && score >= min && score <= max);
  if (range === undefined) {
    throw new ScoringError('SCORE_INVALID', `score: must be an integer from 0 to 100 (got ${score})`);
  }
  return range.band;
}

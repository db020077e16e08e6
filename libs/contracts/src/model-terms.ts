/** The scoring model's terms the messages carry: its signals, and its bands with the scores each holds. */

export type Band = 'Trustworthy' | 'Low Risk' | 'Moderate Risk' | 'Suspicious' | 'High Risk';
/**
 * The vendor's five bands, lowest risk first, each with the scores it holds (scoring.md): the one place the
 * scoring model and the schemas take them from. VMS policies match these exact labels.
 */
export const BAND_SCORES: readonly { band: Band; min: number; max: number }[] = [
  { band: 'Trustworthy', min: 0, max: 20 },
  { band: 'Low Risk', min: 21, max: 40 },
  { band: 'Moderate Risk', min: 41, max: 60 },
  { band: 'Suspicious', min: 61, max: 80 },
  { band: 'High Risk', min: 81, max: 100 },
];
export const BANDS: readonly Band[] = BAND_SCORES.map(({ band }) => band);

/** The signals the model scores, in the order they are evaluated and listed (scoring.md). */
export const SIGNALS = [
  'riskScore',
  'exposureLevel',
  'avStatus',
  'onboarding',
  'healthStatus',
  'inactivity',
  'criticalCves',
] as const;
export type SignalName = (typeof SIGNALS)[number];

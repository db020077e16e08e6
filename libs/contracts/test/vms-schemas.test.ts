import { SIGNALS, checkMessage, vmsRecord, type ScoredDevice } from '@urs/contracts';
import { scoreBatchOf, scoredDevice } from '@urs/testkit';

const SIGNAL_RULE = `must be one of ${SIGNALS.join(', ')}`;

/** A device of 85 points, its avStatus charged as assumed and its exposure level missing. */
const device: ScoredDevice = scoredDevice('d1', 85, 'High Risk', {
  contributions: [
    { group: 'critical', signal: 'riskScore', value: 'High', points: 30, assumed: false },
    { group: 'critical', signal: 'avStatus', value: 'Disabled', points: 20, assumed: true },
    { group: 'operational', signal: 'inactivity', value: 'gt14d', points: 10, assumed: false },
  ],
  missing: ['avStatus', 'exposureLevel'],
  missingReasons: { avStatus: 'NOT_REPORTED', exposureLevel: 'NOT_REPORTED' },
});

/** The vms.risk-scores record of `scored`, and the score batch that carries it: their violations. */
function violations(scored: unknown): { record: unknown; batch: unknown } {
  const record = vmsRecord('acme', 'c1', '2026-01-21T10:00:31.000Z', scored as ScoredDevice).value;
  const batch = scoreBatchOf([scored as ScoredDevice]);
  const inBatch = checkMessage('urs/score-batch', batch).map(({ field, ...rest }) => ({
    field: field.replace(/^devices\.0\./, ''),
    ...rest,
  }));
  return { record: checkMessage('urs/vms-risk-score', record), batch: inBatch };
}

/** The same violations on the VMS record and on the score batch item. */
const both = (expected: unknown) => ({ record: expected, batch: expected });

describe('a scored device in a vms.risk-scores record and a score batch', () => {
  it('should be accepted with contributions assumed and observed', () => {
    expect(violations(device)).toEqual(both([]));
  });

  it('should refuse a contribution that does not say whether it was assumed', () => {
    const { assumed: _assumed, ...unsaid } = device.contributions[0]!;
    expect(violations({ ...device, contributions: [unsaid] })).toEqual(
      both([{ field: 'contributions.0.assumed', rule: 'is required' }]),
    );
  });

  it.each([
    [0, 'Trustworthy', 'Low Risk'],
    [20, 'Trustworthy', 'Low Risk'],
    [21, 'Low Risk', 'Trustworthy'],
    [40, 'Low Risk', 'Moderate Risk'],
    [41, 'Moderate Risk', 'Low Risk'],
    [60, 'Moderate Risk', 'Suspicious'],
    [61, 'Suspicious', 'Moderate Risk'],
    [80, 'Suspicious', 'High Risk'],
    [81, 'High Risk', 'Suspicious'],
    [100, 'High Risk', 'Trustworthy'],
  ])('should take score %i with band %s only, not %s', (score, band, wrong) => {
    expect(violations({ ...device, score, band })).toEqual(both([]));
    expect(violations({ ...device, score, band: wrong })).toEqual(
      both([{ field: 'band', rule: `must be ${JSON.stringify(band)}` }]),
    );
  });

  it('should refuse a signal the model does not score, in a contribution, in missing and in missingReasons', () => {
    const contributions = [
      { group: 'critical', signal: 'osPlatform', value: 'Windows11', points: 5, assumed: false },
    ];
    expect(violations({ ...device, contributions })).toEqual(
      both([{ field: 'contributions.0.signal', rule: SIGNAL_RULE }]),
    );
    expect(violations({ ...device, missing: ['avStatus', 'osBuild'] })).toEqual(
      both([{ field: 'missing.1', rule: SIGNAL_RULE }]),
    );
    const missingReasons = { ...device.missingReasons, osBuild: 'NOT_REPORTED' };
    expect(violations({ ...device, missingReasons })).toEqual(
      both([{ field: 'missingReasons.osBuild', rule: 'is not a known field' }]),
    );
  });

  it('should refuse a contribution member it does not declare, and an assumed that is not true or false', () => {
    const extra = [{ ...device.contributions[0], weight: 2 }];
    expect(violations({ ...device, contributions: extra })).toEqual(
      both([{ field: 'contributions.0.weight', rule: 'is not a known field' }]),
    );
    const assumed = [{ ...device.contributions[0], assumed: 'yes' }];
    expect(violations({ ...device, contributions: assumed })).toEqual(
      both([{ field: 'contributions.0.assumed', rule: 'must be true or false' }]),
    );
  });
});

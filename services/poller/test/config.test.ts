import { ConfigError } from '@urs/config';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { pollerConfig, warnOfShortIntervalUnit } from '../src/config';

const KEY = Buffer.alloc(32, 7).toString('base64');

describe('pollerConfig', () => {
  it('pollerConfig should list devices 10,000 a page unless told otherwise', () => {
    expect(pollerConfig({ URS_SECRET_KEY: KEY }).pageSize).toBe(10_000);
    expect(pollerConfig({ URS_SECRET_KEY: KEY, URS_POLL_PAGE_SIZE: '2000' }).pageSize).toBe(2_000);
  });

  it('pollerConfig should refuse a page size outside 100–10,000, naming the variable and the rule', () => {
    const refused = (value: string) => () => pollerConfig({ URS_SECRET_KEY: KEY, URS_POLL_PAGE_SIZE: value });
    expect(refused('99')).toThrow(ConfigError);
    expect(refused('99')).toThrow(/^URS_POLL_PAGE_SIZE must be ≥ 100 \(got 99\)$/);
    expect(refused('10001')).toThrow(/^URS_POLL_PAGE_SIZE must be ≤ 10000 \(got 10001\)$/);
    expect(refused('many')).toThrow(/^URS_POLL_PAGE_SIZE must be a whole number \(got "many"\)$/);
  });
});

describe('warnOfShortIntervalUnit', () => {
  const warnings = (intervalUnitMs: number): LogLine[] => {
    const lines: LogLine[] = [];
    warnOfShortIntervalUnit({ intervalUnitMs }, capturingLogger(lines));
    return lines.filter((line) => line.level === 'warn');
  };

  it('warnOfShortIntervalUnit should warn, below a minute, how many times as often tenants are polled', () => {
    expect(warnings(1_000)).toEqual([
      {
        level: 'warn',
        message:
          'URS_POLL_INTERVAL_UNIT_MS is below a minute: tenants are polled 60 times as often as registered ' +
          "(a setting for tests and demos, not production: it spends the tenants' Defender API quotas)",
        intervalUnitMs: 1_000,
        timesAsOften: 60,
      },
    ]);
    expect(warnings(59_999)).toHaveLength(1);
  });

  it('warnOfShortIntervalUnit should say nothing of a unit of a minute or more', () => {
    expect(warnings(60_000)).toEqual([]);
    expect(warnings(120_000)).toEqual([]);
  });
});

import { ConfigError } from '@urs/config';
import { pollerConfig } from '../src/config';

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

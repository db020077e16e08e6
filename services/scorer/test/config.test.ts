import { scorerConfig } from '../src/config';

describe('scorerConfig', () => {
  test('scorerConfig should give two replicas with the same URS_INSTANCE_ID profiles groups of their own', () => {
    const env = { URS_INSTANCE_ID: 'scorer-1' };
    const first = scorerConfig(env).profilesGroupId;
    const second = scorerConfig(env).profilesGroupId;
    expect(first).not.toBe(second);
    expect(first).toMatch(/^urs\.scorer\.profiles\.scorer-1-[0-9a-f]{8}$/);
    expect(second).toMatch(/^urs\.scorer\.profiles\.scorer-1-[0-9a-f]{8}$/);
  });

  test('scorerConfig should append the instance and a random part to a fixed URS_PROFILES_GROUP', () => {
    const env = { URS_PROFILES_GROUP: 'team.profiles', URS_INSTANCE_ID: 'scorer' };
    const first = scorerConfig(env).profilesGroupId;
    expect(first).toMatch(/^team\.profiles\.scorer-[0-9a-f]{8}$/);
    expect(scorerConfig(env).profilesGroupId).not.toBe(first);
  });

  test('scorerConfig should start the default profiles group with the scorer group and this pid', () => {
    const config = scorerConfig({ URS_TOPIC_PREFIX: 'test-' }, 'abcd');
    expect(config.groupId).toBe('test-urs.scorer');
    expect(config.profilesGroupId).toBe(`test-urs.scorer.profiles.scorer-${process.pid}-abcd`);
  });

  test('scorerConfig should wait 30 s at most for urs.tenants to be read at start, as the poller, unless URS_SCORER_CATCHUP_TIMEOUT_MS says', () => {
    expect(scorerConfig({}).catchUpTimeoutMs).toBe(30_000);
    expect(scorerConfig({ URS_SCORER_CATCHUP_TIMEOUT_MS: '120000' }).catchUpTimeoutMs).toBe(120_000);
  });
});

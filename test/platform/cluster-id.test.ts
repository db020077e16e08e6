import { fromStackModule } from './stack-module';

// The local stack formats Kafka's storage with a random cluster id passed as `-t <id>`. About one id in 64 would
// start with '-' and be read by the storage tool as an option, so `stack:up` failed now and then on a fresh
// machine.
describe('the local stack’s Kafka cluster id', () => {
  it('has the shape of `kafka-storage random-uuid` and never starts with a dash', () => {
    const out = fromStackModule(
      'kafka-config.mjs',
      'JSON.stringify(Array.from({ length: 5000 }, () => m.randomClusterId()))',
    );
    const ids = JSON.parse(out) as string[];
    expect(ids).toHaveLength(5000);
    for (const id of ids) {
      expect(id).toMatch(/^[A-Za-z0-9_][A-Za-z0-9_-]{21}$/);
      expect(Buffer.from(id, 'base64url')).toHaveLength(16);
    }
    expect(new Set(ids).size).toBe(5000);
  });
});

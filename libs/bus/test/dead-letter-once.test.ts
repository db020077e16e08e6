import { writeDeadLetterOnce, type DeadLetterLedger, type DeadLetterSource } from '../src/dead-letter-once';
import { silentLogger } from '@urs/logging';

const source: DeadLetterSource = {
  topic: 'urs.tenants',
  partition: 0,
  offset: '7',
  timestamp: '1764979200000',
  code: 'CONTRACT_INVALID',
};

/** A ledger whose answers the test sets, recording what it was told. */
function ledger(claim: () => Promise<boolean>, written: () => Promise<void> = async () => undefined) {
  const calls: string[] = [];
  const fake: DeadLetterLedger = {
    claim: async () => {
      calls.push('claim');
      return claim();
    },
    written: async () => {
      calls.push('written');
      return written();
    },
    release: async () => void calls.push('release'),
  };
  return { fake, calls };
}

describe('writeDeadLetterOnce', () => {
  it('should write the letter and mark it written when claimed, and skip it when not', async () => {
    const writes: string[] = [];
    const write = async (): Promise<void> => void writes.push('letter');
    const claimed = ledger(async () => true);
    expect(await writeDeadLetterOnce(claimed.fake, source, write, silentLogger)).toBe(true);
    expect(claimed.calls).toEqual(['claim', 'written']);
    const taken = ledger(async () => false);
    expect(await writeDeadLetterOnce(taken.fake, source, write, silentLogger)).toBe(false);
    expect(taken.calls).toEqual(['claim']);
    expect(await writeDeadLetterOnce(undefined, source, write, silentLogger)).toBe(true);
    expect(writes).toEqual(['letter', 'letter']);
  });

  it('should give the claim back and fail when the letter cannot be written', async () => {
    const claimed = ledger(async () => true);
    await expect(
      writeDeadLetterOnce(
        claimed.fake,
        source,
        () => Promise.reject(new Error('Kafka refused')),
        silentLogger,
      ),
    ).rejects.toThrow('Kafka refused');
    expect(claimed.calls).toEqual(['claim', 'release']);
  });

  it('should write the letter when Redis fails to answer, rather than hold the message up', async () => {
    const writes: string[] = [];
    const write = async (): Promise<void> => void writes.push('letter');
    const away = ledger(() => Promise.reject(new Error('ECONNREFUSED')));
    expect(await writeDeadLetterOnce(away.fake, source, write, silentLogger)).toBe(true);
    const unmarked = ledger(
      async () => true,
      () => Promise.reject(new Error('READONLY')),
    );
    expect(await writeDeadLetterOnce(unmarked.fake, source, write, silentLogger)).toBe(true);
    expect(writes).toEqual(['letter', 'letter']);
  });
});

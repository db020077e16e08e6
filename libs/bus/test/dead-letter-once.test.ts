import {
  writeDeadLetterOnce,
  type DeadLetterClaim,
  type DeadLetterLedger,
  type DeadLetterSource,
} from '../src/dead-letter-once';
import { silentLogger } from '@urs/logging';

const source: DeadLetterSource = {
  topic: 'urs.tenants',
  partition: 0,
  offset: '7',
  timestamp: '1764979200000',
  code: 'CONTRACT_INVALID',
};

/** A ledger whose answers the test sets, recording what it was told. */
function ledger(claim: () => Promise<DeadLetterClaim>, written: () => Promise<void> = async () => undefined) {
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
  it('should write the letter and mark it written when claimed, skip it when written, and tell a busy claim apart', async () => {
    const writes: string[] = [];
    const write = async (): Promise<void> => void writes.push('letter');
    const claimed = ledger(async () => 'claimed');
    expect(await writeDeadLetterOnce(claimed.fake, source, write, silentLogger)).toBe('written');
    expect(claimed.calls).toEqual(['claim', 'written']);
    const written = ledger(async () => 'written');
    expect(await writeDeadLetterOnce(written.fake, source, write, silentLogger)).toBe('written-before');
    expect(written.calls).toEqual(['claim']);
    const busy = ledger(async () => 'busy');
    expect(await writeDeadLetterOnce(busy.fake, source, write, silentLogger)).toBe('busy');
    expect(busy.calls).toEqual(['claim']);
    expect(await writeDeadLetterOnce(undefined, source, write, silentLogger)).toBe('written');
    expect(writes).toEqual(['letter', 'letter']);
  });

  it('should give the claim back and fail when the letter cannot be written', async () => {
    const claimed = ledger(async () => 'claimed');
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
    expect(await writeDeadLetterOnce(away.fake, source, write, silentLogger)).toBe('written');
    const unmarked = ledger(
      async () => 'claimed',
      () => Promise.reject(new Error('READONLY')),
    );
    expect(await writeDeadLetterOnce(unmarked.fake, source, write, silentLogger)).toBe('written');
    // A client that queues its commands while Redis is away: no answer at all, for as long as that lasts.
    const silent = ledger(() => new Promise<never>(() => undefined));
    expect(await writeDeadLetterOnce(silent.fake, source, write, silentLogger, 10)).toBe('written');
    const unanswered = ledger(
      async () => 'claimed',
      () => new Promise<never>(() => undefined),
    );
    expect(await writeDeadLetterOnce(unanswered.fake, source, write, silentLogger, 10)).toBe('written');
    expect(writes).toEqual(['letter', 'letter', 'letter', 'letter']);
  });
});

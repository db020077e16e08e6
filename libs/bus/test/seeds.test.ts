import type { Admin, Kafka } from 'kafkajs';
import { connectAdminThroughSeeds, seedsFrom } from '../src/seeds';

const refused = Object.assign(new Error('Connection error: connect ECONNREFUSED'), {
  name: 'KafkaJSConnectionError',
});

/** A client of one seed broker whose admin connects, or fails to with `failure`, counting both. */
function seed(failure?: Error) {
  const counts = { connects: 0, disconnects: 0 };
  const admin = {
    connect: async () => {
      counts.connects++;
      if (failure) throw failure;
    },
    disconnect: async () => void counts.disconnects++,
  } as unknown as Admin;
  const client: Pick<Kafka, 'admin'> = { admin: () => admin };
  return { client, admin, counts };
}

describe('connectAdminThroughSeeds', () => {
  it('should connect through the next seed broker when the first does not answer', async () => {
    const [away, up, unused] = [seed(refused), seed(), seed()];
    const connected = await connectAdminThroughSeeds([away.client, up.client, unused.client]);
    expect(connected).toEqual({ admin: up.admin, seed: 1 });
    expect(away.counts).toEqual({ connects: 1, disconnects: 1 });
    expect(unused.counts.connects).toBe(0);
  });

  it('should throw the last failure once no seed broker answered, each admin disconnected', async () => {
    const last = Object.assign(new Error('Connection timeout'), { name: 'KafkaJSConnectionError' });
    const [first, second] = [seed(refused), seed(last)];
    await expect(connectAdminThroughSeeds([first.client, second.client])).rejects.toBe(last);
    expect(first.counts).toEqual({ connects: 1, disconnects: 1 });
    expect(second.counts).toEqual({ connects: 1, disconnects: 1 });
  });

  it('should try no further seed broker once stopped', async () => {
    const stop = new AbortController();
    const first = seed(refused);
    const stopping = { admin: () => (stop.abort(), first.client.admin()) };
    const next = seed();
    await expect(connectAdminThroughSeeds([stopping, next.client], stop.signal)).rejects.toBe(refused);
    expect(next.counts.connects).toBe(0);
  });

  it('should list the seed brokers from the one that answered on', () => {
    expect(seedsFrom(['a', 'b', 'c'], 1)).toEqual(['b', 'c', 'a']);
    expect(seedsFrom(['a', 'b', 'c'], 0)).toEqual(['a', 'b', 'c']);
  });
});

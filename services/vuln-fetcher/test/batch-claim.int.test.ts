import type { DeviceBatch } from '@urs/contracts';
import { createBulkVulnerabilityCache, createCycleStore, type CycleStore } from '@urs/store';
import { capturingLogger, inboundMessage, testRedisPerTest, waitFor, type LogLine } from '@urs/testkit';
import type { EnrichHandlerDeps } from '../src/handler';
import type { VulnerabilityLike } from '../src/summarise';
import { batch, cve, message, setup } from './handler-support';

// The same device batch given to two vuln-fetchers at once (a rebalance while it runs: the replica that had
// its partition still works on it while the new owner reads it again): one of them asks Defender for its
// devices and sends it, the other waits and ends without sending it, or takes it over once the first one's
// claim is given back or lapses.

/** The cycle store in Redis, counting the claims it answered `held` and the renewals it granted. */
function watchedCycles(cycles: CycleStore): {
  cycles: CycleStore;
  held: () => number;
  renewed: () => number;
} {
  let held = 0;
  let renewed = 0;
  return {
    cycles: {
      ...cycles,
      async claimBatch(...args) {
        const answer = await cycles.claimBatch(...args);
        if (answer === 'held') held++;
        return answer;
      },
      async renewBatchClaim(...args) {
        const kept = await cycles.renewBatchClaim(...args);
        if (kept) renewed++;
        return kept;
      },
    },
    held: () => held,
    renewed: () => renewed,
  };
}

/** A Defender source that records the devices it is asked for and answers once `until` holds. */
function slowSource(asked: string[], until: () => boolean) {
  return {
    machineVulnerabilities: async (id: string): Promise<VulnerabilityLike[]> => {
      asked.push(id);
      await waitFor(until, { intervalMs: 10, description: 'the other replica waiting' });
      return [cve('CVE-1', 9.8)];
    },
  };
}

/** A replica: the enrich handler over the shared cycle store, with short claims. */
function replica(
  source: Parameters<typeof setup>[0],
  cycles: CycleStore,
  overrides: Partial<EnrichHandlerDeps> = {},
) {
  return setup(source, { cycles, batchClaimMs: 5_000, batchClaimPollMs: 10, ...overrides });
}

const withSignal = (value: DeviceBatch, signal: AbortSignal) =>
  inboundMessage(value, { topic: 'urs.device-batches', key: value.tenantId, signal });

describe('createEnrichHandler on a batch two replicas are given at once', () => {
  const redis = testRedisPerTest();

  it('should ask Defender for each device once and send one enriched batch, the second replica sending none', async () => {
    const store = watchedCycles(createCycleStore(redis.client, redis.prefix));
    const asked: string[] = [];
    const source = slowSource(asked, () => store.held() >= 2);
    const first = replica(source, store.cycles);
    const second = replica(source, store.cycles);
    await Promise.all([first.handler(message(batch())), second.handler(message(batch()))]);
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3']);
    const sent = [...first.sent, ...second.sent];
    expect(sent).toHaveLength(1);
    expect(sent[0]?.devices.every((device) => device.vulnerabilities !== null)).toBe(true);
    expect(await redis.client.exists(`${redis.prefix}cycle-batch-claim:t1:c1:0`)).toBe(0);
  });

  it('should keep the claim renewed while the batch takes longer than the claim lasts', async () => {
    const store = watchedCycles(createCycleStore(redis.client, redis.prefix));
    const asked: string[] = [];
    // Answered once the holder renewed its claim for over twice its length, the other replica waiting.
    const source = slowSource(asked, () => store.held() >= 2 && store.renewed() >= 8);
    const first = replica(source, store.cycles, { batchClaimMs: 600 });
    const second = replica(source, store.cycles, { batchClaimMs: 600 });
    await Promise.all([first.handler(message(batch())), second.handler(message(batch()))]);
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3']);
    expect([...first.sent, ...second.sent]).toHaveLength(1);
  });

  it("should read a bulk cycle's export once, each batch sent once, with a batch given to both replicas", async () => {
    const store = watchedCycles(createCycleStore(redis.client, redis.prefix));
    const bulkCache = createBulkVulnerabilityCache(redis.client, redis.prefix);
    let exports = 0;
    // The export is read once the other replica waits for the batch held by the reading one.
    const source = {
      bulkVulnerabilities: async (onRow: (deviceId: string, vulnerability: VulnerabilityLike) => void) => {
        exports += 1;
        await waitFor(() => store.held() >= 2, { intervalMs: 10 });
        for (const id of ['d1', 'd2', 'd3', 'd4']) onRow(id, cve('CVE-9', 9.9));
      },
    };
    const first = replica(source, store.cycles, { bulkCache });
    const second = replica(source, store.cycles, { bulkCache });
    const bulk = (batchIndex: number, ids: string[]): DeviceBatch =>
      batch({
        vulnerabilityMode: 'bulk',
        batchIndex,
        lastBatch: batchIndex === 1,
        totalBatches: 2,
        totalDevices: 4,
        devices: ids.map((id) => ({ id })),
      });
    await Promise.all([
      first.handler(message(bulk(0, ['d1', 'd2']))),
      second.handler(message(bulk(0, ['d1', 'd2']))),
      second.handler(message(bulk(1, ['d3', 'd4']))),
    ]);
    expect(exports).toBe(1);
    const sent = [...first.sent, ...second.sent];
    expect(sent.map((enriched) => enriched.batchIndex).sort()).toEqual([0, 1]);
    expect(
      sent.every((enriched) => enriched.devices.every((device) => device.vulnerabilities !== null)),
    ).toBe(true);
  });

  it('should take over a batch whose holder was stopped mid-batch, and send it once', async () => {
    const store = watchedCycles(createCycleStore(redis.client, redis.prefix));
    const askedFirst: string[] = [];
    const stopFirst = new AbortController();
    // The first replica's calls wait until it is stopped, and fail then, as a Defender call does.
    const first = replica(
      {
        machineVulnerabilities: async (id, signal) => {
          askedFirst.push(id);
          await waitFor(() => signal?.aborted, { intervalMs: 10 });
          throw new Error('aborted');
        },
      },
      store.cycles,
    );
    const askedSecond: string[] = [];
    const second = replica(
      {
        machineVulnerabilities: async (id) => {
          askedSecond.push(id);
          return [cve('CVE-1', 9.8)];
        },
      },
      store.cycles,
    );
    const firstRun = first.handler(withSignal(batch(), stopFirst.signal));
    await waitFor(() => askedFirst.length > 0);
    const secondRun = second.handler(message(batch()));
    await waitFor(() => store.held() >= 1);
    expect(askedSecond).toEqual([]);
    stopFirst.abort();
    await expect(firstRun).rejects.toMatchObject({ code: 'STOPPING', canRetry: true });
    await secondRun;
    expect(first.sent).toHaveLength(0);
    expect(second.sent).toHaveLength(1);
    expect(askedSecond.sort()).toEqual(['d1', 'd2', 'd3']);
    expect(second.sent[0]?.devices.every((device) => device.vulnerabilities !== null)).toBe(true);
  });

  it('should take over a batch once the claim of a holder that died lapses', async () => {
    const store = watchedCycles(createCycleStore(redis.client, redis.prefix));
    // A replica that took the batch and died: its claim is never renewed nor given back.
    expect(await store.cycles.claimBatch('t1', 'c1', 0, 'replica-gone', 300)).toBe('claimed');
    const asked: string[] = [];
    const { handler, sent } = replica(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          return [cve('CVE-1', 9.8)];
        },
      },
      store.cycles,
    );
    await handler(message(batch()));
    expect(store.held()).toBeGreaterThan(0);
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3']);
    expect(sent).toHaveLength(1);
  });

  it('should give the batch up, unsent and to be tried again, when its claim was lost to another replica', async () => {
    const asked: string[] = [];
    // Calls that wait until the batch is given up, and fail then, as a Defender call does.
    const { handler, sent } = replica(
      {
        machineVulnerabilities: async (id, signal) => {
          asked.push(id);
          await waitFor(() => signal?.aborted, { intervalMs: 10 });
          throw new Error('aborted');
        },
      },
      createCycleStore(redis.client, redis.prefix),
      { batchClaimMs: 300 },
    );
    const run = handler(message(batch()));
    await waitFor(() => asked.length > 0);
    // Its renewals stopped for longer than the claim lasts (Redis away from it), and another replica took it.
    const claimKey = `${redis.prefix}cycle-batch-claim:t1:c1:0`;
    await redis.client.set(claimKey, 'replica-other', 'PX', 60_000);
    await expect(run).rejects.toMatchObject({ code: 'BATCH_CLAIM_LOST', canRetry: true });
    expect(sent).toHaveLength(0);
    expect(await redis.client.get(claimKey)).toBe('replica-other');
  });

  it('should take its claim again and finish the batch when Redis lost the claim, nobody else holding it', async () => {
    const store = watchedCycles(createCycleStore(redis.client, redis.prefix));
    const asked: string[] = [];
    const claimKey = `${redis.prefix}cycle-batch-claim:t1:c1:0`;
    let dropped = false;
    // Answered once the claim was gone from Redis (a wipe) and renewed after it.
    const source = slowSource(asked, () => dropped && store.renewed() >= 2);
    const { handler, sent } = replica(source, store.cycles, { batchClaimMs: 300 });
    const run = handler(message(batch()));
    await waitFor(() => asked.length > 0);
    await redis.client.del(claimKey);
    dropped = true;
    await run;
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3']);
    expect(sent).toHaveLength(1);
  });

  it('should not wait out another live holder when it stops', async () => {
    const store = watchedCycles(createCycleStore(redis.client, redis.prefix));
    expect(await store.cycles.claimBatch('t1', 'c1', 0, 'replica-alive', 60_000)).toBe('claimed');
    const stopping = new AbortController();
    const asked: string[] = [];
    const { handler, sent } = replica(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          return [];
        },
      },
      store.cycles,
      { signal: stopping.signal },
    );
    const run = handler(message(batch()));
    await waitFor(() => store.held() >= 1);
    stopping.abort();
    await expect(run).rejects.toMatchObject({ code: 'STOPPING', canRetry: true });
    expect(asked).toEqual([]);
    expect(sent).toHaveLength(0);
    // The other holder's claim is left to it.
    expect(await redis.client.get(`${redis.prefix}cycle-batch-claim:t1:c1:0`)).toBe('replica-alive');
  });

  it('should enrich a batch delivered twice at once to the same replica once', async () => {
    const lines: LogLine[] = [];
    const asked: string[] = [];
    const waiting = (): boolean => lines.some((line) => line.message.startsWith('batch being enriched'));
    const { handler, sent } = replica(
      slowSource(asked, waiting),
      createCycleStore(redis.client, redis.prefix),
      { logger: capturingLogger(lines) },
    );
    await Promise.all([handler(message(batch())), handler(message(batch()))]);
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3']);
    expect(sent).toHaveLength(1);
  });

  it('should reuse the answers a delivery stopped here had got, when another delivery here takes the batch over', async () => {
    const lines: LogLine[] = [];
    const asked: string[] = [];
    let stopped = false;
    const stopFirst = new AbortController();
    // d1 is answered; d2 and d3 wait until the first delivery is stopped, then fail as a Defender call does.
    const { handler, sent } = replica(
      {
        machineVulnerabilities: async (id, signal) => {
          asked.push(id);
          if (id !== 'd1' && !stopped) {
            await waitFor(() => signal?.aborted, { intervalMs: 10 });
            throw new Error('aborted');
          }
          return [cve('CVE-1', 9.8)];
        },
      },
      createCycleStore(redis.client, redis.prefix),
      { logger: capturingLogger(lines) },
    );
    const firstRun = handler(withSignal(batch(), stopFirst.signal));
    await waitFor(() => asked.length === 3);
    const secondRun = handler(message(batch()));
    await waitFor(() => lines.some((line) => line.message.startsWith('batch being enriched')));
    stopped = true;
    stopFirst.abort();
    await expect(firstRun).rejects.toMatchObject({ code: 'STOPPING' });
    await secondRun;
    expect(asked.sort()).toEqual(['d1', 'd2', 'd2', 'd3', 'd3']);
    expect(sent).toHaveLength(1);
    expect(sent[0]?.devices.every((device) => device.vulnerabilities !== null)).toBe(true);
  });
});

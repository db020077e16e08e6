import type { DeviceBatch } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import type { CycleState, LatestExport } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { createBulkEnrichment, type BulkDeps } from '../src/bulk';
import { batch, memoryBulkCache } from './handler-support';

// A bulk cycle's batches wait behind the previous cycle's last batch when a try of it here failed.

const bulkBatch = (cycleId: string, batchIndex: number, totalBatches: number): DeviceBatch =>
  batch({
    cycleId,
    cycleStartedAt: cycleId === 'c1' ? '2026-01-01T10:00:00.000Z' : '2026-01-01T10:10:00.000Z',
    batchIndex,
    totalBatches,
    lastBatch: batchIndex === totalBatches - 1,
    vulnerabilityMode: 'bulk',
  });

function enrichment(
  previous: CycleState | null = { published: undefined } as CycleState,
  bulkCache = memoryBulkCache(),
  lastHandledAgain?: boolean,
) {
  const asked: string[] = [];
  const metrics = new Registry({ processMetrics: false });
  const cycles: BulkDeps['cycles'] = {
    holdOpen: async () => false,
    // The previous cycle's last batch is never found enriched nor recorded lost.
    enrichedOrLostBatches: async (_tenantId, cycleId) => {
      asked.push(cycleId);
      return 0;
    },
    get: async (_tenantId, cycleId) => {
      asked.push(`get ${cycleId}`);
      return previous;
    },
  };
  const bulk = createBulkEnrichment({
    bulkCache,
    tenants: { updatePollingStatus: async () => true },
    exportLast: true,
    metrics,
    now: () => new Date(),
    bulkWaitMs: 50,
    bulkClaimMs: 1_000,
    bulkPollMs: 5,
    cycles,
  });
  // Cycle c1's last batch failed here, retryably: the bus tries it again, it never succeeds.
  const last = bulkBatch('c1', 0, 1);
  const c1 = bulk.cycleOf(last);
  if (!c1) throw new Error('no bulk cycle');
  bulk.tried(last, c1, new Error('produce failed'), lastHandledAgain);
  return { bulk, asked };
}

describe("a bulk cycle's batches behind the previous cycle's failed last batch", () => {
  it('should wait once for the whole cycle: a later batch does not wait again', async () => {
    const { bulk, asked } = enrichment();
    const first = bulkBatch('c2', 0, 3);
    const cycle = bulk.cycleOf(first);
    if (!cycle) throw new Error('no bulk cycle');
    await bulk.afterPrevious(first, cycle, silentLogger, undefined);
    expect(asked.filter((cycleId) => cycleId === 'get c1').length).toBeGreaterThan(1);

    asked.length = 0;
    const second = bulkBatch('c2', 1, 3);
    expect(bulk.cycleOf(second)).toBe(cycle);
    await bulk.afterPrevious(second, cycle, silentLogger, undefined);
    expect(asked).toEqual([]);
  });

  it('should share one deadline between batches waiting at once', async () => {
    const { bulk, asked } = enrichment();
    const batches = [bulkBatch('c2', 0, 3), bulkBatch('c2', 1, 3)];
    const cycle = bulk.cycleOf(batches[0] as DeviceBatch);
    if (!cycle) throw new Error('no bulk cycle');
    await Promise.all(batches.map((b) => bulk.afterPrevious(b, cycle, silentLogger, undefined)));
    asked.length = 0;
    const third = bulkBatch('c2', 2, 3);
    await bulk.afterPrevious(third, cycle, silentLogger, undefined);
    expect(asked).toEqual([]);
  });

  it("should not wait for the previous cycle's last batch when its failed try was its last: the bus dead-letters it", async () => {
    const { bulk, asked } = enrichment(undefined, undefined, false);
    const first = bulkBatch('c2', 0, 2);
    const cycle = bulk.cycleOf(first);
    if (!cycle) throw new Error('no bulk cycle');
    await bulk.afterPrevious(first, cycle, silentLogger, undefined);
    expect(asked).toEqual([]);
  });

  it('should not wait once the previous cycle was published', async () => {
    const { bulk, asked } = enrichment({ published: 'partial' } as CycleState);
    const first = bulkBatch('c2', 0, 2);
    const cycle = bulk.cycleOf(first);
    if (!cycle) throw new Error('no bulk cycle');
    await bulk.afterPrevious(first, cycle, silentLogger, undefined);
    // One look, no polls.
    expect(asked.filter((cycleId) => cycleId === 'get c1')).toHaveLength(1);
  });

  it('should not wait once the previous cycle is gone', async () => {
    const { bulk, asked } = enrichment(null);
    const first = bulkBatch('c2', 0, 2);
    const cycle = bulk.cycleOf(first);
    if (!cycle) throw new Error('no bulk cycle');
    await bulk.afterPrevious(first, cycle, silentLogger, undefined);
    expect(asked.filter((cycleId) => cycleId === 'get c1')).toHaveLength(1);
  });
});

describe("a bulk cycle's batches enriched from the tenant's latest export", () => {
  it('should ask Redis for the export pinned for the cycle once, not again for each later batch', async () => {
    const bulkCache = memoryBulkCache();
    await bulkCache.save('t1', 'c1', [['d1', null]], '2026-01-01T10:00:30.000Z');
    const c1: LatestExport = {
      cycleId: 'c1',
      collectedAt: '2026-01-01T10:00:30.000Z',
      cvssThreshold: 9,
      azureTenantId: 'dir',
      cloud: 'commercial',
    };
    const asked: string[] = [];
    bulkCache.latest = async () => {
      asked.push('latest');
      return c1;
    };
    bulkCache.pinLatest = async (_tenantId, _cycleId, latest) => {
      asked.push('pinLatest');
      return latest;
    };
    const { bulk } = enrichment(undefined, bulkCache);
    const app = { azureTenantId: 'DIR', cloud: 'commercial' } as const;
    const source = { machineVulnerabilities: async () => [], bulkVulnerabilities: async () => undefined };
    const batches = [bulkBatch('c2', 0, 3), bulkBatch('c2', 1, 3)];
    for (const b of batches) {
      const cycle = bulk.cycleOf(b);
      if (!cycle) throw new Error('no bulk cycle');
      const enriched = await bulk.enrich(b, app, source, async () => undefined, silentLogger, undefined);
      expect(enriched.collectedAt).toEqual(new Date(c1.collectedAt));
    }
    // Enriched from c1's export, the cycle's own not read.
    expect(await bulkCache.state('t1', 'c2')).toEqual({ state: 'absent' });
    expect(asked).toEqual(['latest', 'pinLatest']);
  });
});

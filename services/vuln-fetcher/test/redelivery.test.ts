import { ReplyError } from 'ioredis';
import { isKafkaAuthorizationRefusal } from '@urs/bus';
import { isInfrastructureFault } from '@urs/resilience';
import type { CycleStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { topicNotAuthorised } from '@urs/testkit';
import type { EnrichHandlerDeps } from '../src/handler';
import { batch, capturingPublisher, cve, message, setup } from './handler-support';

// A device batch delivered to the vuln-fetcher again after its enriched batch was produced: not enriched
// again (no second round of Defender calls, no duplicate downstream), unless that produce never finished.

const oom = (): Error => new ReplyError("OOM command not allowed when used memory > 'maxmemory'.");

/** The cycle store's record of enriched batches, in memory. */
function memoryCycles(): EnrichHandlerDeps['cycles'] {
  const enriched = new Set<string>();
  const key = (tenantId: string, cycleId: string, batchIndex: number): string =>
    `${tenantId}/${cycleId}/${batchIndex}`;
  return {
    addCorrections: async (_tenantId, _cycleId, batches) => batches,
    enriched: async (tenantId, cycleId, batchIndex) => void enriched.add(key(tenantId, cycleId, batchIndex)),
    enrichedOrLostBatches: async () => enriched.size,
    notInSnapshot: async () => [],
    holdOpen: async () => false,
    get: async () => ({}) as Awaited<ReturnType<CycleStore['get']>>,
    claimBatch: async (tenantId, cycleId, batchIndex) =>
      enriched.has(key(tenantId, cycleId, batchIndex)) ? 'enriched' : 'claimed',
    renewBatchClaim: async () => true,
    releaseBatchClaim: async () => undefined,
    lost: async () => true,
  };
}

const skipped = (metrics: Registry, mode: string): number =>
  metrics.counter('urs_enriched_batches_skipped_total', '').get({ mode });

describe('createEnrichHandler on a batch delivered again', () => {
  it('should not ask Defender again nor send the batch twice once its enriched batch was produced', async () => {
    const asked: string[] = [];
    const metrics = new Registry({ processMetrics: false });
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          return [cve('CVE-1', 9.8)];
        },
      },
      { cycles: memoryCycles(), metrics },
    );
    await handler(message(batch()));
    await expect(handler(message(batch()))).resolves.toBeUndefined();
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3']);
    expect(sent).toHaveLength(1);
    expect(skipped(metrics, 'per-device')).toBe(1);
    // Another batch of the cycle, and the same batch of another cycle, are enriched.
    await handler(message(batch({ batchIndex: 1 })));
    await handler(message(batch({ cycleId: 'c2' })));
    expect(sent).toHaveLength(3);
  });

  it('should not send a bulk batch twice once its enriched batch was produced', async () => {
    let exports = 0;
    const metrics = new Registry({ processMetrics: false });
    const { handler, sent } = setup(
      {
        bulkVulnerabilities: async (onRow) => {
          exports += 1;
          onRow('d1', cve('CVE-9', 9.9));
        },
      },
      { cycles: memoryCycles(), metrics },
    );
    const bulk = batch({ vulnerabilityMode: 'bulk' });
    await handler(message(bulk));
    await handler(message(bulk));
    expect(exports).toBe(1);
    expect(sent).toHaveLength(1);
    expect(skipped(metrics, 'bulk')).toBe(1);
  });

  it('should enrich a batch again when its produce failed, from the calls already answered', async () => {
    const asked: string[] = [];
    let sends = 0;
    const { handler } = setup(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          return [];
        },
      },
      {
        cycles: memoryCycles(),
        publisher: {
          send: async () => {
            sends += 1;
            if (sends === 1) throw oom();
          },
          sendRaw: async () => undefined,
          close: async () => undefined,
        },
      },
    );
    await expect(handler(message(batch()))).rejects.toThrow('OOM');
    await handler(message(batch()));
    expect(sends).toBe(2);
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3']);
  });

  it('should fail a batch whose produce Kafka refuses for want of an ACL with the refusal, and ask Defender for none of its devices again while it is held', async () => {
    const asked: string[] = [];
    let refusing = true;
    const kafka = capturingPublisher(() => {
      if (refusing) throw topicNotAuthorised();
    });
    const { handler } = setup(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          return [];
        },
      },
      {
        cycles: memoryCycles(),
        publisher: kafka.publisher,
      },
    );
    // The bus holds what fails so (holdReason not-authorized), never dead-letters it, and tries it again.
    for (let held = 0; held < 3; held++) {
      const refusal = await handler(message(batch())).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(isKafkaAuthorizationRefusal(refusal)).toBe(true);
    }
    refusing = false;
    await handler(message(batch()));
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3']);
    expect(kafka.sent).toHaveLength(1);
  });

  it('should keep the answered calls for the next try when recording the sent batch fails', async () => {
    const asked: string[] = [];
    const cycles = memoryCycles();
    let records = 0;
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          return [];
        },
      },
      {
        cycles: {
          ...cycles,
          enriched: async (...args: Parameters<CycleStore['enriched']>) => {
            records += 1;
            if (records === 1) throw oom();
            await cycles.enriched(...args);
          },
        },
      },
    );
    const handled = handler(message(batch()));
    await expect(handled).rejects.toThrow('OOM');
    expect(isInfrastructureFault(await handled.catch((e: unknown) => e))).toBe(true);
    // Not recorded: sent again, from the answers had, and recorded this time.
    await handler(message(batch()));
    await handler(message(batch()));
    expect(sent).toHaveLength(2);
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3']);
  });

  it('should fail the batch, not drop it, when Redis fails the question whether it was sent', async () => {
    const asked: string[] = [];
    const error = oom();
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          return [];
        },
      },
      {
        cycles: {
          ...memoryCycles(),
          claimBatch: async () => {
            throw error;
          },
        },
      },
    );
    const handled = handler(message(batch()));
    await expect(handled).rejects.toBe(error);
    // The bus holds the batch for it (retried until Redis is back, never dead-lettered).
    expect(isInfrastructureFault(await handled.catch((e: unknown) => e))).toBe(true);
    expect(asked).toEqual([]);
    expect(sent).toEqual([]);
  });
});

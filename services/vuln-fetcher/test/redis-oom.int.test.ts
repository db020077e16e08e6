import type { ChildProcess } from 'node:child_process';
import Redis from 'ioredis';
import type { DeviceBatch } from '@urs/contracts';
import { type CallLimiter, createRedisQuotaGate, createSharedLimiter } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { isInfrastructureFault } from '@urs/resilience';
import { type Simulator, startSimulator } from '@urs/simulator';
import {
  closeRedis,
  createAnsweredCalls,
  createBulkVulnerabilityCache,
  createCycleStore,
  createRedis,
  createTenantStore,
} from '@urs/store';
import { Registry } from '@urs/telemetry';
import { freePort, inboundMessage, startRedis, stopRedis } from '@urs/testkit';
import { createEnrichHandler, type EnrichHandlerDeps } from '../src/handler';
import { type OwnSources, capturingPublisher, sealedTenant, simSources } from './handler-support';

// The real shared call limiter (Bottleneck on ioredis) and quota gate on a Redis of the test's own, turned
// out of memory (`maxmemory 1`, `noeviction`): the shared Redis's configuration is never changed.

describe('createEnrichHandler with its Redis out of memory', () => {
  let server: ChildProcess;
  let sim: Simulator;
  let redis: Redis;
  let admin: Redis;
  let limiter: CallLimiter;
  const tenant = sealedTenant();
  let sources: OwnSources;

  beforeAll(async () => {
    const port = await freePort();
    server = await startRedis(port);
    // As the services make it (commands wait while Redis is away); `admin` changes the test's own server.
    redis = createRedis({ url: `redis://127.0.0.1:${port}` });
    admin = new Redis(port, { disableClientInfo: true, maxRetriesPerRequest: 3 });
    sim = await startSimulator({ quotas: false });
    tenant.addTo(sim, { size: 4, seed: 7 });
    limiter = await createSharedLimiter({ redis, keyPrefix: 'oom:', logger: silentLogger });
  });

  afterAll(async () => {
    sources?.close();
    await limiter?.close();
    await sim?.close();
    admin?.disconnect();
    if (redis) await closeRedis(redis);
    if (server) await stopRedis(server);
  });

  it('should fail the batch with the limiter’s OOM reply, or its claim’s, an infrastructure fault, and send nothing', async () => {
    const record = tenant.record('oom-tenant');
    const tenants = createTenantStore(redis, 'oom:');
    await tenants.put(record);
    sources = simSources(sim, tenant.sealer, {
      limiter,
      quota: createRedisQuotaGate(redis, 'oom:'),
      requestTimeoutMs: 5_000,
    });
    const { sent, publisher } = capturingPublisher();
    const cycles = createCycleStore(redis, 'oom:');
    // The tenant lookup's transaction is refused under OOM too (EXECABORT, the OOM replies its previous errors:
    // an infrastructure fault, held alike, checked below); read plainly here so that the limiter's reply and the
    // claim's are what is looked at.
    const plainLookup: EnrichHandlerDeps['tenants'] = {
      ...tenants,
      lookup: async (tenantId) => ({ record: await tenants.get(tenantId), rebuilt: true }),
    };
    const handlerOver = (store: EnrichHandlerDeps['cycles']) =>
      createEnrichHandler({
        tenants: plainLookup,
        sources: sources.sources,
        bulkCache: createBulkVulnerabilityCache(redis, 'oom:', 60_000),
        answers: createAnsweredCalls(redis, 'oom:'),
        cycles: store,
        publisher,
        topic: 'urs.devices-enriched',
        logger: silentLogger,
        metrics: new Registry({ processMetrics: false }),
        concurrency: 2,
        bulkWaitMs: 1_000,
        bulkClaimMs: 1_000,
      });
    // The batch's claim (its first write) left out at first: the limiter's reply is what is looked at.
    const handler = handlerOver({
      ...cycles,
      claimBatch: async () => 'claimed',
      renewBatchClaim: async () => true,
      releaseBatchClaim: async () => undefined,
    });
    const ids = sim.machines(tenant.azureTenantId).map((machine) => machine.id);
    const batch = (cycleId: string): DeviceBatch => ({
      schemaVersion: 1,
      tenantId: record.tenantId,
      cycleId,
      cycleStartedAt: new Date().toISOString(),
      batchIndex: 0,
      lastBatch: true,
      totalBatches: 1,
      totalDevices: ids.length,
      vulnerabilityMode: 'per-device',
      cvssThreshold: 9,
      devices: ids.map((id) => ({ id })),
    });
    const message = (value: DeviceBatch) => inboundMessage(value, { key: value.tenantId });

    // Redis taking writes: every device is enriched.
    await handler(message(batch('cycle-1')));
    expect(sent).toHaveLength(1);
    expect(sent[0]?.devices.every((device) => device.vulnerabilities !== null)).toBe(true);

    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1');
    let error: unknown;
    try {
      await handler(message(batch('cycle-2')));
    } catch (thrown) {
      error = thrown;
    }
    // Bottleneck rejects the call with ioredis's ReplyError as Redis answered it (its `submit` script): the
    // bus holds the batch for it instead of sending its devices on without vulnerabilities.
    expect(error).toMatchObject({ name: 'ReplyError', message: expect.stringMatching(/^OOM /) });
    expect(isInfrastructureFault(error)).toBe(true);
    expect(sent).toHaveLength(1);
    expect((await tenants.getStatus(record.tenantId)).state).not.toBe('error');
    const lookupError: unknown = await tenants.lookup(record.tenantId).catch((thrown: unknown) => thrown);
    expect(isInfrastructureFault(lookupError)).toBe(true);

    // Redis back: the batch comes again and is enriched.
    await admin.config('SET', 'maxmemory', '0');
    await handler(message(batch('cycle-2')));
    expect(sent).toHaveLength(2);
    expect(sent[1]?.devices.every((device) => device.vulnerabilities !== null)).toBe(true);

    // The batch's claim refused the same way: the batch fails with the OOM reply, and is held.
    const claiming = handlerOver(cycles);
    await admin.config('SET', 'maxmemory', '1');
    error = undefined;
    try {
      await claiming(message(batch('cycle-3')));
    } catch (thrown) {
      error = thrown;
    }
    expect(error).toMatchObject({ name: 'ReplyError', message: expect.stringMatching(/^OOM /) });
    expect(isInfrastructureFault(error)).toBe(true);
    expect(sent).toHaveLength(2);
    await admin.config('SET', 'maxmemory', '0');
    await claiming(message(batch('cycle-3')));
    expect(sent).toHaveLength(3);
  });
});

import { ReplyError } from 'ioredis';
import type { DeviceBatch, TenantRecord } from '@urs/contracts';
import { type Simulator, startSimulator } from '@urs/simulator';
import { createAnsweredCalls, createCycleStore, createTenantStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { testRedisPerTest, waitFor } from '@urs/testkit';
import type { EnrichHandlerDeps } from '../src/handler';
import type { SourceProvider, VulnerabilitySource } from '../src/sources';
import {
  type OwnSources,
  capturingPublisher,
  batch as unitBatch,
  message,
  sealedTenant,
  setup,
  simSources,
} from './handler-support';

// A per-device batch's answered calls kept in Redis: the replica that takes a batch over after its holder
// stopped, or the batch's next try after a fault, asks Microsoft (the simulator, which counts its calls) only
// for the devices not answered yet.

const DEVICES = 8;

/** What the sources let a test do to a replica's calls before they reach the simulator. */
type CallGate = (machineId: string, signal: AbortSignal | undefined) => Promise<void>;

describe('createEnrichHandler keeping a per-device batch’s answered calls in Redis', () => {
  const redis = testRedisPerTest();
  let sim: Simulator;
  let ids: string[];
  const tenant = sealedTenant();
  const opened: OwnSources[] = [];

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false });
    tenant.addTo(sim, { size: DEVICES, seed: 11 });
    ids = sim.machines(tenant.azureTenantId).map((machine) => machine.id);
  });

  afterEach(() => {
    for (const sources of opened.splice(0)) sources.close();
  });

  afterAll(async () => {
    await sim?.close();
  });

  /** The devices' vulnerability calls the simulator answered since the test began. */
  const calls = (): number => sim.stats().callsByTenant[tenant.azureTenantId]?.['vulnerabilities'] ?? 0;

  async function registered(): Promise<TenantRecord> {
    sim.resetStats();
    const record = tenant.record('answers-tenant');
    await createTenantStore(redis.client, redis.prefix).put(record);
    return record;
  }

  const batch = (record: TenantRecord, overrides: Partial<DeviceBatch> = {}): DeviceBatch =>
    unitBatch({
      tenantId: record.tenantId,
      cycleId: 'cycle-1',
      totalDevices: DEVICES,
      devices: ids.map((id) => ({ id })),
      ...overrides,
    });

  /** A vuln-fetcher replica over the test's Redis and the simulator, `gate` run before each call. */
  function replica(gate: CallGate = async () => undefined, overrides: Partial<EnrichHandlerDeps> = {}) {
    const own = simSources(sim, tenant.sealer, { requestTimeoutMs: 5_000 });
    opened.push(own);
    const { sources } = own;
    const gated: SourceProvider = {
      ...sources,
      forTenant(record) {
        const source = sources.forTenant(record);
        return {
          ...source,
          async machineVulnerabilities(machineId, signal) {
            await gate(machineId, signal);
            return source.machineVulnerabilities(machineId, signal);
          },
        } satisfies VulnerabilitySource;
      },
    };
    return setup({}, {
      tenants: createTenantStore(redis.client, redis.prefix),
      sources: gated,
      cycles: createCycleStore(redis.client, redis.prefix),
      answers: createAnsweredCalls(redis.client, redis.prefix),
      batchClaimMs: 5_000,
      batchClaimPollMs: 10,
      now: () => new Date(),
      ...overrides,
    } as Partial<EnrichHandlerDeps>);
  }

  /** A gate that lets `answered` calls through, then holds every later one until the replica is stopped. */
  function stoppedAfter(answered: number): { gate: CallGate; held: () => number } {
    let passed = 0;
    let held = 0;
    return {
      held: () => held,
      async gate(_machineId, signal) {
        if (passed < answered) {
          passed++;
          return;
        }
        held++;
        await waitFor(() => signal?.aborted, { intervalMs: 10, description: 'the replica stopped' });
        throw new Error('aborted');
      },
    };
  }

  const answersKey = (record: TenantRecord, cycleId = 'cycle-1', batchIndex = 0): string =>
    `${redis.prefix}vuln-answers:${record.tenantId}:${cycleId}:${batchIndex}`;

  /** A clock a second further at each look, from `from`. */
  const clockFrom = (from: string): (() => Date) => {
    let at = Date.parse(from);
    return () => new Date((at += 1000));
  };

  const keptOf = (record: TenantRecord) =>
    createAnsweredCalls(redis.client, redis.prefix).read(record.tenantId, 'cycle-1', 0);

  /** What KafkaJS fails a send with when the broker is away. */
  const kafkaDown = (): Error =>
    Object.assign(new Error('Connection timeout'), { name: 'KafkaJSConnectionError', retriable: true });

  it('should ask Defender only for the devices the stopped holder had not answered, on the replica taking the batch over', async () => {
    const record = await registered();
    const stopping = new AbortController();
    const first = stoppedAfter(3);
    const holder = replica(first.gate, {
      signal: stopping.signal,
      now: clockFrom('2026-01-01T10:00:00.000Z'),
    });
    const run = holder.handler(message(batch(record)));
    // Three devices answered, both of the holder's call slots waiting: a rolling deploy stops it.
    await waitFor(() => first.held() === 2);
    stopping.abort();
    await expect(run).rejects.toMatchObject({ code: 'STOPPING', canRetry: true });
    expect(calls()).toBe(3);
    expect(await redis.client.hlen(answersKey(record))).toBe(3);
    const ttl = await redis.client.pttl(answersKey(record));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(15 * 60_000);
    const firstCollectedAt = (await keptOf(record))?.collectedAt;

    const asked: string[] = [];
    const metrics = new Registry({ processMetrics: false });
    const taker = replica(async (machineId) => void asked.push(machineId), {
      now: clockFrom('2026-01-01T11:00:00.000Z'),
      metrics,
    });
    await taker.handler(message(batch(record)));
    expect(calls()).toBe(DEVICES);
    expect(asked).toHaveLength(DEVICES - 3);
    // The quota the kept answers saved, as an operator sees it.
    const fetches = metrics.expose();
    expect(fetches).toContain('urs_vulnerability_fetches_total{mode="per-device",outcome="reused"} 3');
    expect(fetches).toContain(
      `urs_vulnerability_fetches_total{mode="per-device",outcome="ok"} ${DEVICES - 3}`,
    );
    expect(taker.sent).toHaveLength(1);
    const sent = taker.sent[0];
    expect(sent?.devices.map((device) => device.machine.id)).toEqual(ids);
    expect(sent?.devices.every((device) => device.vulnerabilities !== null)).toBe(true);
    // Collected when its last device was answered, here: after the holder's answers.
    expect(firstCollectedAt).toMatch(/^2026-01-01T10:/);
    expect(sent?.collectedAt).toMatch(/^2026-01-01T11:/);
    // Sent: its answers go.
    expect(await redis.client.exists(answersKey(record))).toBe(0);
  });

  it('should keep the collectedAt of the holder’s last answer when the replica taking over asks for nothing', async () => {
    const record = await registered();
    // Every device answered, then the send fails: the batch is held, and its partition goes to another replica.
    let sends = 0;
    const { publisher } = capturingPublisher(() => {
      sends++;
      throw kafkaDown();
    });
    const holder = replica(undefined, { publisher, now: clockFrom('2026-01-01T10:00:00.000Z') });
    await expect(holder.handler(message(batch(record)))).rejects.toMatchObject({
      name: 'KafkaJSConnectionError',
    });
    expect(sends).toBe(1);
    const kept = (await keptOf(record))?.collectedAt;
    expect(kept).toMatch(/^2026-01-01T10:/);

    const taker = replica(undefined, { now: clockFrom('2026-01-01T11:00:00.000Z') });
    await taker.handler(message(batch(record)));
    expect(calls()).toBe(DEVICES);
    expect(taker.sent[0]?.collectedAt).toBe(kept);
    expect(taker.sent[0]?.devices.every((device) => device.vulnerabilities !== null)).toBe(true);
  });

  it('should ask only for the devices not answered yet when the batch comes again after a fault of Redis', async () => {
    const record = await registered();
    let refusing = true;
    // The shared call limiter refusing a slot (its Redis out of memory) for the fifth device asked for.
    let asked = 0;
    const { handler, sent } = replica(
      async () => {
        if (++asked === 5 && refusing)
          throw new ReplyError("OOM command not allowed when used memory > 'maxmemory'.");
      },
      { concurrency: 1 },
    );
    await expect(handler(message(batch(record)))).rejects.toThrow(/^OOM/);
    expect(calls()).toBe(4);
    refusing = false;
    await handler(message(batch(record)));
    expect(calls()).toBe(DEVICES);
    expect(sent).toHaveLength(1);
    expect(sent[0]?.devices.every((device) => device.vulnerabilities !== null)).toBe(true);
    expect(await redis.client.exists(answersKey(record))).toBe(0);
  });

  it('should ask for none of the devices again when the batch comes again after its send failed', async () => {
    const record = await registered();
    let sends = 0;
    const { publisher, sent } = capturingPublisher(() => {
      if (++sends === 1) throw kafkaDown();
    });
    const { handler } = replica(undefined, { publisher });
    await expect(handler(message(batch(record)))).rejects.toMatchObject({ name: 'KafkaJSConnectionError' });
    await handler(message(batch(record)));
    expect(sends).toBe(2);
    expect(calls()).toBe(DEVICES);
    expect(sent[0]?.devices.every((device) => device.vulnerabilities !== null)).toBe(true);
    expect(await redis.client.exists(answersKey(record))).toBe(0);
  });

  it('should not use the answers of a batch for another batch of its cycle, nor for another cycle', async () => {
    const record = await registered();
    let failing = true;
    const { publisher, sent } = capturingPublisher(() => {
      if (failing) throw kafkaDown();
    });
    const { handler } = replica(undefined, { publisher });
    // Every device of batch 0 answered, the batch held: its answers are kept.
    await expect(handler(message(batch(record)))).rejects.toMatchObject({ name: 'KafkaJSConnectionError' });
    expect(calls()).toBe(DEVICES);
    failing = false;
    await handler(message(batch(record, { batchIndex: 1 })));
    expect(calls()).toBe(2 * DEVICES);
    await handler(message(batch(record, { cycleId: 'cycle-2' })));
    expect(calls()).toBe(3 * DEVICES);
    // Batch 0 of the first cycle, tried again, still has its own.
    await handler(message(batch(record)));
    expect(calls()).toBe(3 * DEVICES);
    expect(sent.map((each) => `${each.cycleId}/${each.batchIndex}`)).toEqual([
      'cycle-1/1',
      'cycle-2/0',
      'cycle-1/0',
    ]);
  });
});

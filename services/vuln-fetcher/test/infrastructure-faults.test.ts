import { ReplyError } from 'ioredis';
import type { EnrichedBatch } from '@urs/contracts';
import { DefenderError, DefenderErrorCode } from '@urs/defender';
import { isInfrastructureFault } from '@urs/resilience';
import { StoreError, type TenantStatus } from '@urs/store';
import { VulnerabilityFolder } from '../src/summarise';
import { batch, cve, memoryAnswers, message, record, setup } from './handler-support';

// What Bottleneck's shared limiter and the quota gate reject a call with when their Redis refuses writes:
// ioredis's ReplyError, passed on as it is (see redis-oom.int.test.ts for the real one).
const oom = (): Error =>
  new ReplyError(
    "OOM command not allowed when used memory > 'maxmemory'. script: f00a66a4, on @user_script:23.",
  );

const faults: [string, () => Error][] = [
  ['the call limiter refusing a slot (OOM)', oom],
  [
    'a read-only Redis (READONLY)',
    () => new ReplyError("READONLY You can't write against a read only replica."),
  ],
  ['a closed Redis connection', () => new Error('Connection is closed.')],
  [
    'a store call failing',
    () => new StoreError('REDIS_UNAVAILABLE', 'Redis did not answer', { cause: oom() }),
  ],
];

describe('createEnrichHandler on a fault of Redis', () => {
  it.each(faults)(
    'should fail a per-device batch on %s, sending nothing and writing no status',
    async (_name, fault) => {
      const error = fault();
      const asked: string[] = [];
      const { handler, sent, statuses } = setup({
        machineVulnerabilities: async (id) => {
          asked.push(id);
          if (id === 'd2') throw error;
          return [cve('CVE-1', 9.8)];
        },
      });
      const handled = handler(message(batch()));
      await expect(handled).rejects.toBe(error);
      // The bus holds the batch for it (retried until Redis is back, never dead-lettered).
      expect(isInfrastructureFault(await handled.catch((e: unknown) => e))).toBe(true);
      expect(sent).toEqual([]);
      expect(statuses).toEqual([]);
    },
  );

  it('should stop asking for the batch’s other devices once a call met the fault', async () => {
    const asked: string[] = [];
    const { handler } = setup(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          if (id === 'd1') throw oom();
          return [];
        },
      },
      { concurrency: 1 },
    );
    await expect(handler(message(batch()))).rejects.toThrow(/^OOM/);
    expect(asked).toEqual(['d1']);
  });

  it('should ask only for the devices not answered yet when the batch comes again after the fault', async () => {
    const asked: string[] = [];
    let refusing = true;
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          if (id === 'd2' && refusing) throw oom();
          return id === 'd1' ? [cve('CVE-1', 9.8)] : [];
        },
      },
      { concurrency: 1 },
    );
    await expect(handler(message(batch()))).rejects.toThrow(/^OOM/);
    refusing = false;
    await handler(message(batch()));
    expect(asked).toEqual(['d1', 'd2', 'd2', 'd3']);
    const devices = (sent[0] as EnrichedBatch).devices;
    expect(devices.map((device) => device.vulnerabilities?.totalCveCount)).toEqual([1, 0, 0]);
    expect(devices.every((device) => device.fetchError === undefined)).toBe(true);
    // Sent: a later delivery of the batch (a redelivery) asks again.
    await handler(message(batch()));
    expect(asked).toHaveLength(7);
  });

  it('should send the batch, its devices enriched, when Redis fails to keep their answers', async () => {
    const { handler, sent, statuses } = setup(
      { machineVulnerabilities: async () => [cve('CVE-1', 9.8)] },
      {
        answers: {
          ...memoryAnswers(),
          keep: async () => {
            throw oom();
          },
        },
      },
    );
    await handler(message(batch()));
    expect(sent).toHaveLength(1);
    expect(sent[0]?.devices.map((device) => device.vulnerabilities?.totalCveCount)).toEqual([1, 1, 1]);
    expect(sent[0]?.devices.every((device) => device.fetchError === undefined)).toBe(true);
    expect(statuses).toEqual([]);
  });

  it('should fail the batch, asking Defender for none of its devices, when Redis fails to read its kept answers', async () => {
    const asked: string[] = [];
    const answers = memoryAnswers();
    let refusing = true;
    const { handler, sent, statuses } = setup(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          return [];
        },
      },
      {
        answers: {
          ...answers,
          read: async (...args) => {
            if (refusing) throw new ReplyError('LOADING Redis is loading the dataset in memory');
            return answers.read(...args);
          },
        },
      },
    );
    const handled = handler(message(batch()));
    await expect(handled).rejects.toThrow(/^LOADING/);
    expect(isInfrastructureFault(await handled.catch((e: unknown) => e))).toBe(true);
    expect(asked).toEqual([]);
    expect(sent).toEqual([]);
    expect(statuses).toEqual([]);
    refusing = false;
    await handler(message(batch()));
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3']);
  });

  it('should not mark a bulk export failed when Redis fails its read, and read it when the batch comes again', async () => {
    let refusing = true;
    const { handler, sent, statuses, bulkCache } = setup({
      bulkVulnerabilities: async (onRow) => {
        if (refusing) throw oom();
        onRow('d1', cve('CVE-1', 9.8));
      },
    });
    const bulk = batch({ vulnerabilityMode: 'bulk' });
    await expect(handler(message(bulk))).rejects.toThrow(/^OOM/);
    expect(await bulkCache.state('t1', 'c1')).not.toMatchObject({ state: 'failed' });
    expect(sent).toEqual([]);
    expect(statuses).toEqual([]);
    // Its claim is this process's: the batch takes it back at once, without waiting for it to lapse.
    refusing = false;
    await handler(message(bulk));
    expect(sent[0]?.devices.map((device) => device.vulnerabilities?.totalCveCount)).toEqual([1, 0, 0]);
  });

  it('should not mark a bulk export failed when Redis refuses to store it', async () => {
    const { handler, sent, statuses, bulkCache } = setup({
      bulkFold: async () => new VulnerabilityFolder(),
    });
    const save = bulkCache.save.bind(bulkCache);
    let refusing = true;
    bulkCache.save = async (...args) => {
      if (refusing) throw oom();
      await save(...args);
    };
    const bulk = batch({ vulnerabilityMode: 'bulk' });
    await expect(handler(message(bulk))).rejects.toThrow(/^OOM/);
    expect(await bulkCache.state('t1', 'c1')).not.toMatchObject({ state: 'failed' });
    expect(sent).toEqual([]);
    expect(statuses).toEqual([]);
    refusing = false;
    await handler(message(bulk));
    expect(sent[0]?.devices.every((device) => device.vulnerabilities !== null)).toBe(true);
  });

  it("should write a tenant's failure to its status when the batch comes again after Redis refused the write", async () => {
    let calls = 0;
    const statuses: Partial<TenantStatus>[] = [];
    let refusing = true;
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async () => {
          calls++;
          throw new DefenderError(
            DefenderErrorCode.INVALID_SECRET,
            'The client secret is not valid (AADSTS7000215)',
          );
        },
      },
      {
        concurrency: 1,
        tenants: {
          lookup: async () => ({ record, rebuilt: true }),
          updatePollingStatus: async (_tenantId, status) => {
            if (refusing) throw new ReplyError("READONLY You can't write against a read only replica.");
            statuses.push(status as Partial<TenantStatus>);
            return true;
          },
        },
      },
    );
    await expect(handler(message(batch()))).rejects.toThrow(/^READONLY/);
    expect(sent).toEqual([]);
    refusing = false;
    // Not remembered for the cycle while its status is unwritten: the batch meets the failure again, and
    // this time the admin sees it.
    await handler(message(batch()));
    expect(calls).toBe(2);
    expect(statuses).toEqual([
      expect.objectContaining({
        state: 'error',
        lastErrorCode: 'DEFENDER_INVALID_SECRET',
        lastErrorCycleId: 'c1',
      }),
    ]);
    expect(sent[0]?.devices.every((device) => device.fetchError?.code === 'DEFENDER_INVALID_SECRET')).toBe(
      true,
    );
    // Written: the cycle's later batches take the remembered failure and call no more.
    await handler(message(batch({ batchIndex: 1 })));
    expect(calls).toBe(2);
  });
});

describe('createEnrichHandler holding many batches through a fault of Redis', () => {
  const held = (count: number) =>
    Array.from({ length: count }, (_, index) =>
      batch({
        cycleId: `c${index}`,
        devices: Array.from({ length: 50 }, (_, device) => ({ id: `b${index}-d${device}` })),
        totalDevices: 50,
      }),
    );

  it('should serve each of many held batches, retried in turn, from its answered calls', async () => {
    let calls = 0;
    let refusing = true;
    let clock = Date.parse('2026-01-01T10:00:00.000Z');
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async (id) => {
          calls++;
          // Each batch's last device meets the fault until Redis is back.
          if (refusing && id.endsWith('-d49')) throw oom();
          return [cve('CVE-1', 9.8)];
        },
      },
      { concurrency: 1, now: () => new Date((clock += 10)) },
    );
    const batches = held(40);
    for (const each of batches) await expect(handler(message(each))).rejects.toThrow(/^OOM/);
    expect(calls).toBe(40 * 50);
    // Redis still refusing: the bus tries each held batch again, in turn.
    calls = 0;
    for (const each of batches) await expect(handler(message(each))).rejects.toThrow(/^OOM/);
    expect(calls).toBe(40);
    refusing = false;
    calls = 0;
    for (const each of batches) await handler(message(each));
    expect(calls).toBe(40);
    expect(sent).toHaveLength(40);
    expect(sent.every((each) => each.devices.every((device) => device.vulnerabilities !== null))).toBe(true);
  });
});

import type { EnrichedBatch, TenantRecord } from '@urs/contracts';
import type { TenantStatus } from '@urs/store';
import { DefenderError, DefenderErrorCode } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { Registry } from '@urs/telemetry';
import { capturingLogger, type LogLine } from '@urs/testkit';
import type { EnrichHandlerDeps } from '../src/handler';
import { TenantAccessError, type SourceProvider } from '../src/sources';
import {
  batch,
  capturingPublisher,
  cve,
  fetched,
  memoryAnswers,
  message,
  record,
  setup,
} from './handler-support';

// What a batch does when its tenant fails as a whole, or its devices are gone: the devices it counts, the calls
// it makes, and what it sends on.

/** Not part of the cycle's first batch: its totals come with the last one. */
const firstOf = (devices: { id: string }[]) =>
  batch({ devices, lastBatch: false, totalBatches: undefined, totalDevices: undefined });

const devicesOf = (count: number, from = 0): { id: string }[] =>
  Array.from({ length: count }, (_, i) => ({ id: `d${from + i}` }));

/** A clock the test moves: `now` reads it, `pass` moves it on. */
function testClock(): { now: () => Date; pass: (ms: number) => void } {
  let at = Date.parse('2026-01-01T10:00:05.000Z');
  return { now: () => new Date(at), pass: (ms) => void (at += ms) };
}

/** Sources whose `forTenant` fails as a stored secret sealed with a key id no longer held does. */
const unopenedSecret = (): SourceProvider => ({
  forTenant: () => {
    throw new TenantAccessError('SECRET_KEY_UNKNOWN', 'the stored client secret is sealed with key id k0');
  },
  forget: () => undefined,
  close: () => undefined,
});

describe('a tenant failing as a whole', () => {
  it('should count every device of the later batches of the cycle as skipped, or not held', async () => {
    const metrics = new Registry({ processMetrics: false });
    let calls = 0;
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async () => {
          calls++;
          throw new DefenderError(DefenderErrorCode.CONSENT_MISSING, 'the app lacks Vulnerability.Read.All');
        },
      },
      { concurrency: 1, metrics },
    );
    await handler(message(firstOf(devicesOf(3))));
    const later = [{ id: 'd3' }, { id: 'd4', isExcluded: true }, { id: 'd5' }];
    await handler(message(batch({ batchIndex: 1, devices: later })));
    expect(calls).toBe(1);
    expect(sent).toHaveLength(2);
    expect(fetched(metrics, 'per-device', 'failed')).toBe(1);
    expect(fetched(metrics, 'per-device', 'skipped')).toBe(2 + 2);
    expect(fetched(metrics, 'per-device', 'not-held')).toBe(1);
  });

  it.each(['per-device', 'bulk'] as const)(
    'should count every %s device of a tenant whose secret cannot be opened, in every batch of the cycle',
    async (mode) => {
      const metrics = new Registry({ processMetrics: false });
      const { handler, sent, statuses } = setup({}, { metrics, sources: unopenedSecret() });
      await handler(message({ ...firstOf(devicesOf(3)), vulnerabilityMode: mode }));
      await handler(message(batch({ batchIndex: 1, devices: devicesOf(2, 3), vulnerabilityMode: mode })));
      const devices = sent.flatMap((out) => out.devices);
      // Both batches are sent, every device of each in them, none with vulnerabilities.
      expect(devices.map((device) => device.machine.id)).toEqual(['d0', 'd1', 'd2', 'd3', 'd4']);
      for (const device of devices) {
        expect(device.vulnerabilities).toBeNull();
        expect(device.fetchError?.code).toBe('SECRET_KEY_UNKNOWN');
      }
      expect(statuses[0]).toMatchObject({ state: 'error', lastErrorCode: 'SECRET_KEY_UNKNOWN' });
      // The per-device side's devices not asked for are `skipped`; the bulk side's without an export `failed`.
      expect(fetched(metrics, mode, mode === 'bulk' ? 'failed' : 'skipped')).toBe(5);
    },
  );
});

describe('a batch sent on without calls, tried again while Kafka refuses it', () => {
  it.each(['per-device', 'bulk'] as const)(
    'should count its %s devices once, when it is sent, not once per try',
    async (mode) => {
      const metrics = new Registry({ processMetrics: false });
      let sends = 0;
      const { publisher } = capturingPublisher(() => {
        // The cycle's first batch is sent; Kafka refuses the second batch's first three tries.
        if (++sends >= 2 && sends <= 4) throw new Error('KafkaJSNumberOfRetriesExceeded');
      });
      const { handler } = setup({}, { metrics, sources: unopenedSecret(), publisher });
      await handler(message({ ...firstOf(devicesOf(3)), vulnerabilityMode: mode }));
      const later = [{ id: 'd3' }, { id: 'd4', isExcluded: true }, { id: 'd5' }];
      const second = batch({ batchIndex: 1, devices: later, vulnerabilityMode: mode });
      for (let tries = 0; tries < 3; tries++)
        await expect(handler(message(second))).rejects.toThrow('KafkaJSNumberOfRetriesExceeded');
      await handler(message(second));
      expect(fetched(metrics, mode, mode === 'bulk' ? 'failed' : 'skipped')).toBe(3 + 2);
      expect(fetched(metrics, mode, 'not-held')).toBe(1);
    },
  );
});

describe('a bulk batch whose export failed, tried again while Kafka refuses it', () => {
  it('should count its devices failed once, when it is sent, not once per try', async () => {
    const metrics = new Registry({ processMetrics: false });
    let sends = 0;
    const { publisher } = capturingPublisher(() => {
      // Kafka refuses the batch's first three tries.
      if (++sends <= 3) throw new Error('KafkaJSNumberOfRetriesExceeded');
    });
    const { handler, bulkCache } = setup({}, { metrics, publisher });
    await bulkCache.fail('t1', 'c1', { code: 'DEFENDER_UNAVAILABLE', message: 'the export failed' });
    const devices = [{ id: 'd1' }, { id: 'd2', isExcluded: true }, { id: 'd3' }];
    const held = batch({ devices, vulnerabilityMode: 'bulk' });
    for (let tries = 0; tries < 3; tries++)
      await expect(handler(message(held))).rejects.toThrow('KafkaJSNumberOfRetriesExceeded');
    await handler(message(held));
    expect(fetched(metrics, 'bulk', 'failed')).toBe(2);
    expect(fetched(metrics, 'bulk', 'not-held')).toBe(1);
  });

  it('should count the devices of a batch enriched from a done export once, not once per try', async () => {
    const metrics = new Registry({ processMetrics: false });
    let sends = 0;
    const { publisher } = capturingPublisher(() => {
      if (++sends <= 3) throw new Error('KafkaJSNumberOfRetriesExceeded');
    });
    const { handler, bulkCache } = setup({}, { metrics, publisher });
    const summary = { criticalCveCount: 0, totalCveCount: 0, maxCvss: null, cvssThreshold: 9, topCveIds: [] };
    await bulkCache.save(
      't1',
      'c1',
      [
        ['d1', summary],
        ['d3', summary],
      ],
      '2026-01-01T10:00:01.000Z',
    );
    const devices = [{ id: 'd1' }, { id: 'd2', isExcluded: true }, { id: 'd3' }];
    const held = batch({ devices, vulnerabilityMode: 'bulk' });
    for (let tries = 0; tries < 3; tries++)
      await expect(handler(message(held))).rejects.toThrow('KafkaJSNumberOfRetriesExceeded');
    await handler(message(held));
    expect(fetched(metrics, 'bulk', 'ok')).toBe(2);
    expect(fetched(metrics, 'bulk', 'not-held')).toBe(1);
  });
});

describe("a tenant whose Defender API fails for its own reasons (an outage, not the tenant's setup)", () => {
  it("should hold the cycle's calls back for a while, then ask again in its later batches", async () => {
    const clock = testClock();
    let down = true;
    const asked: string[] = [];
    const { handler, sent, statuses } = setup(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          if (down) throw new DefenderError(DefenderErrorCode.UNAVAILABLE, 'the API answered 503 six times');
          return [cve('CVE-1', 9.8)];
        },
      },
      { concurrency: 1, now: clock.now },
    );
    await handler(message(firstOf(devicesOf(12))));
    expect(asked).toHaveLength(10);
    expect(statuses[0]).toMatchObject({ state: 'error', lastErrorCode: 'DEFENDER_UNAVAILABLE' });
    // Within the hold-back the cycle's next batch asks for none of its devices.
    clock.pass(5_000);
    await handler(message(batch({ batchIndex: 1, lastBatch: false, devices: devicesOf(3, 12) })));
    expect(asked).toHaveLength(10);
    // Defender is back, and the hold-back over: the cycle's later batches are enriched.
    down = false;
    clock.pass(60_000);
    await handler(message(batch({ batchIndex: 2, devices: devicesOf(3, 15) })));
    expect(asked.slice(10)).toEqual(['d15', 'd16', 'd17']);
    expect(sent[2]?.devices.every((device) => device.vulnerabilities?.criticalCveCount === 1)).toBe(true);
  });

  it("should keep a failure of the tenant's setup for the whole cycle", async () => {
    const clock = testClock();
    let calls = 0;
    const { handler } = setup(
      {
        machineVulnerabilities: async () => {
          calls++;
          throw new DefenderError(DefenderErrorCode.INVALID_SECRET, 'The client secret is not valid');
        },
      },
      { concurrency: 1, now: clock.now },
    );
    await handler(message(firstOf(devicesOf(3))));
    clock.pass(30 * 60_000);
    await handler(message(batch({ batchIndex: 1, devices: devicesOf(3, 3) })));
    expect(calls).toBe(1);
  });

  it("should ask again in the cycle's next batch once an administrator has fixed the tenant's record", async () => {
    let current = record;
    let fixed = false;
    let calls = 0;
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async () => {
          calls++;
          if (!fixed)
            throw new DefenderError(DefenderErrorCode.INVALID_SECRET, 'The client secret is not valid');
          return [cve('CVE-1', 9.8)];
        },
      },
      {
        concurrency: 1,
        tenants: {
          lookup: async () => ({ record: current, rebuilt: true }),
          updatePollingStatus: async () => true,
        },
      },
    );
    await handler(message(firstOf(devicesOf(3))));
    // The record is given a new secret: a newer revision.
    current = { ...record, revision: record.revision + 1 } as TenantRecord;
    fixed = true;
    await handler(message(batch({ batchIndex: 1, devices: devicesOf(3, 3) })));
    expect(calls).toBe(1 + 3);
    expect(sent[1]?.devices.every((device) => device.vulnerabilities?.criticalCveCount === 1)).toBe(true);
  });

  it('should send the answers an earlier try of a batch had when the batch is tried again within the hold-back', async () => {
    const clock = testClock();
    const asked: string[] = [];
    let sends = 0;
    const { sent, publisher } = capturingPublisher(() => {
      // Kafka refuses the batch's first send: the bus tries the batch again.
      if (++sends === 1) throw new Error('KafkaJSNumberOfRetriesExceeded');
    });
    const { handler } = setup(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          if (['d0', 'd1', 'd2'].includes(id)) return [cve('CVE-1', 9.8)];
          throw new DefenderError(DefenderErrorCode.UNAVAILABLE, 'the API answered 503 six times');
        },
      },
      { concurrency: 1, now: clock.now, publisher },
    );
    const devices = devicesOf(15);
    await expect(handler(message(firstOf(devices)))).rejects.toThrow('KafkaJSNumberOfRetriesExceeded');
    expect(asked).toHaveLength(13);
    clock.pass(1_000);
    await handler(message(firstOf(devices)));
    expect(asked).toHaveLength(13);
    const out = sent[0] as EnrichedBatch;
    expect(out.devices.map((device) => device.vulnerabilities?.criticalCveCount ?? null)).toEqual([
      1,
      1,
      1,
      ...Array.from({ length: 12 }, () => null),
    ]);
  });
});

describe('a device whose vulnerabilities call answers 404', () => {
  it('should stay in its enriched batch without vulnerabilities, counted not-found, not failed, and logged without a warning', async () => {
    const metrics = new Registry({ processMetrics: false });
    const lines: LogLine[] = [];
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async (id) => {
          if (id === 'd2')
            throw new DefenderError(DefenderErrorCode.NOT_FOUND, 'Device d2 is not known (404)');
          return [cve('CVE-1', 9.8)];
        },
      },
      { metrics, logger: capturingLogger(lines) },
    );
    await handler(message(batch()));
    const out = sent[0] as EnrichedBatch;
    // Still listed, the device is seen by the publisher: only the listing decides when it is tombstoned.
    expect(out.devices.map((device) => device.machine.id)).toEqual(['d1', 'd2', 'd3']);
    expect(out.devices[1]).toMatchObject({
      vulnerabilities: null,
      fetchError: { code: DefenderErrorCode.NOT_FOUND },
    });
    expect(out).toMatchObject({ batchIndex: 0, lastBatch: true, totalBatches: 1, totalDevices: 3 });
    expect(fetched(metrics, 'per-device', 'not-found')).toBe(1);
    expect(fetched(metrics, 'per-device', 'failed')).toBe(0);
    expect(lines.filter((line) => line.level === 'warn')).toEqual([]);
  });

  it("should make an outage of the tenant's calls when every call answers 404, its status written", async () => {
    const metrics = new Registry({ processMetrics: false });
    let calls = 0;
    const { handler, sent, statuses } = setup(
      {
        machineVulnerabilities: async () => {
          calls++;
          throw new DefenderError(DefenderErrorCode.NOT_FOUND, 'Resource not found (404)');
        },
      },
      { concurrency: 1, metrics },
    );
    await handler(message(firstOf(devicesOf(12))));
    expect(calls).toBe(10);
    expect(statuses).toEqual([
      expect.objectContaining({ state: 'error', lastErrorCode: DefenderErrorCode.NOT_FOUND }),
    ]);
    expect(sent[0]?.devices).toHaveLength(12);
    expect(fetched(metrics, 'per-device', 'not-found')).toBe(10);
    expect(fetched(metrics, 'per-device', 'skipped')).toBe(2);
  });

  /** A source whose devices `notOnboarded` answer 404 (not assessed by Microsoft), the others one critical CVE. */
  const answeringBut = (notOnboarded: Set<string>, asked: string[] = []) => ({
    machineVulnerabilities: async (id: string) => {
      asked.push(id);
      if (notOnboarded.has(id))
        throw new DefenderError(DefenderErrorCode.NOT_FOUND, `Device ${id} is not known (404)`);
      return [cve('CVE-1', 9.8)];
    },
  });
  const criticalCves = (out: EnrichedBatch | undefined) =>
    out?.devices.map((device) => device.vulnerabilities?.criticalCveCount ?? null);

  it("should take 404s in a row after answered calls of the batch for the devices' own, not an outage", async () => {
    const metrics = new Registry({ processMetrics: false });
    const asked: string[] = [];
    // Devices not onboarded, 12 in a row, between devices Microsoft answers for.
    const notOnboarded = new Set(devicesOf(12, 5).map((device) => device.id));
    const { handler, sent, statuses } = setup(answeringBut(notOnboarded, asked), { concurrency: 1, metrics });
    await handler(message(firstOf(devicesOf(25))));
    expect(asked).toHaveLength(25);
    expect(statuses).toEqual([]);
    expect(criticalCves(sent[0])).toEqual(
      devicesOf(25).map((device) => (notOnboarded.has(device.id) ? null : 1)),
    );
    expect(sent[0]?.devices[5]).toMatchObject({ fetchError: { code: DefenderErrorCode.NOT_FOUND } });
    expect(fetched(metrics, 'per-device', 'not-found')).toBe(12);
    expect(fetched(metrics, 'per-device', 'skipped')).toBe(0);
  });

  it("should take 404s in a row for the devices' own once an earlier batch of the cycle had calls answered", async () => {
    const asked: string[] = [];
    const notOnboarded = new Set(devicesOf(12, 3).map((device) => device.id));
    const { handler, sent, statuses } = setup(answeringBut(notOnboarded, asked), { concurrency: 1 });
    await handler(message(firstOf(devicesOf(3))));
    await handler(message(batch({ batchIndex: 1, devices: devicesOf(14, 3) })));
    expect(asked).toHaveLength(3 + 14);
    expect(statuses).toEqual([]);
    expect(criticalCves(sent[1])).toEqual([...Array.from({ length: 12 }, () => null), 1, 1]);
  });

  it("should take 404s in a row for the devices' own when an earlier try of the batch had calls answered", async () => {
    const answers = memoryAnswers();
    const notOnboarded = new Set(devicesOf(12, 3).map((device) => device.id));
    const devices = devicesOf(16);
    // Kafka refuses the batch's send; another replica, which has not seen the cycle, tries it again.
    const { publisher } = capturingPublisher(() => {
      throw new Error('KafkaJSNumberOfRetriesExceeded');
    });
    const first = setup(answeringBut(notOnboarded), { concurrency: 1, answers, publisher });
    await expect(first.handler(message(firstOf(devices)))).rejects.toThrow('KafkaJSNumberOfRetriesExceeded');
    const asked: string[] = [];
    const other = setup(answeringBut(notOnboarded, asked), { concurrency: 1, answers });
    await other.handler(message(firstOf(devices)));
    expect(asked).toEqual([...notOnboarded]);
    expect(other.statuses).toEqual([]);
    expect(criticalCves(other.sent[0])).toEqual([1, 1, 1, ...Array.from({ length: 12 }, () => null), 1]);
  });
});

describe('a tenant disabled during its cycle', () => {
  const disabled = { ...record, enabled: false, disabledReason: 'missing from Director full push 42' };

  /** Tenants whose record is `current()`, their status writes kept in `written`. */
  function tenantsOf(current: () => TenantRecord): {
    tenants: EnrichHandlerDeps['tenants'];
    written: Partial<TenantStatus>[];
  } {
    const written: Partial<TenantStatus>[] = [];
    return {
      written,
      tenants: {
        lookup: async () => ({ record: current(), rebuilt: true }),
        updatePollingStatus: async (_tenantId, status) => {
          written.push(status as Partial<TenantStatus>);
          return true;
        },
      },
    };
  }

  it("should make no call with its credentials, send nothing, and record the batch lost for the cycle's close", async () => {
    let calls = 0;
    let opened = 0;
    const forgotten: string[] = [];
    const { tenants, written } = tenantsOf(() => disabled as TenantRecord);
    const { handler, sent, lostBatches } = setup(
      {},
      {
        tenants,
        sources: {
          forTenant: () => {
            opened++;
            return {
              machineVulnerabilities: async () => {
                calls++;
                return [];
              },
              bulkVulnerabilities: async () => undefined,
            };
          },
          forget: (tenantId) => void forgotten.push(tenantId),
          close: () => undefined,
        },
        logger: silentLogger,
      },
    );
    await handler(message(batch({ batchIndex: 3, devices: devicesOf(4) })));
    expect(opened).toBe(0);
    expect(calls).toBe(0);
    expect(sent).toEqual([]);
    // Disabling a tenant is no failure of it: its status is left alone.
    expect(written).toEqual([]);
    expect(lostBatches).toEqual([{ batchIndex: 3, devices: 4 }]);
    // Its secret is not kept in memory for a tenant no longer polled.
    expect(forgotten).toEqual(['t1']);
  });

  it('should enrich a batch recorded lost while the tenant was disabled when it comes again after the tenant is enabled', async () => {
    let current = disabled as TenantRecord;
    const { tenants, written } = tenantsOf(() => current);
    const { handler, sent, lostBatches, enrichedBatches } = setup(
      { machineVulnerabilities: async () => [cve('CVE-1', 9.8)] },
      { tenants, logger: silentLogger },
    );
    const lost = batch({ batchIndex: 3, devices: devicesOf(4) });
    await handler(message(lost));
    current = { ...record, enabled: true, revision: 2 } as TenantRecord;
    await handler(message(lost));
    expect(lostBatches).toEqual([{ batchIndex: 3, devices: 4 }]);
    expect(enrichedBatches).toEqual([3]);
    expect(sent).toHaveLength(1);
    expect(sent[0]?.devices.every((device) => device.vulnerabilities?.criticalCveCount === 1)).toBe(true);
    expect(written).toEqual([]);
  });
});

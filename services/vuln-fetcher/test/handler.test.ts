import type { EnrichedBatch } from '@urs/contracts';
import { CallHealth, DefenderError, DefenderErrorCode } from '@urs/defender';
import { Registry } from '@urs/telemetry';
import { capturingLogger, type LogLine, waitFor } from '@urs/testkit';
import { VulnerabilityFolder } from '../src/summarise';
import {
  batch,
  cve,
  localSources,
  message,
  randomSealer,
  record,
  sealedTenant,
  setup,
} from './handler-support';

describe('createEnrichHandler', () => {
  it("should summarise each device at the batch threshold and keep the cycle header and the cycle's profile hash", async () => {
    let inFlight = 0;
    let peak = 0;
    const { handler, sent } = setup({
      machineVulnerabilities: async (id) => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((resolve) => setTimeout(resolve, 5));
        inFlight--;
        return id === 'd1' ? [cve('CVE-1', 9.8), cve('CVE-1', 7), cve('CVE-2', 9.0), cve('CVE-3', 5)] : [];
      },
    });
    await handler(message(batch({ profileHash: 'p1' })));
    expect(peak).toBe(2);
    expect(sent).toHaveLength(1);
    const out = sent[0] as EnrichedBatch;
    expect(out).toMatchObject({
      tenantId: 't1',
      cycleId: 'c1',
      batchIndex: 0,
      lastBatch: true,
      totalBatches: 1,
      totalDevices: 3,
      profileHash: 'p1',
    });
    expect(out.devices[0]).toEqual({
      machine: { id: 'd1' },
      vulnerabilities: {
        criticalCveCount: 2,
        totalCveCount: 3,
        maxCvss: 9.8,
        cvssThreshold: 9,
        topCveIds: ['CVE-1', 'CVE-2', 'CVE-3'],
      },
    });
    expect(out.devices[2]?.vulnerabilities?.criticalCveCount).toBe(0);
    // The clock ticks a second per reading: the batch start, then one per response; the last response is at :09.
    expect(Date.parse(out.collectedAt)).toBe(Date.parse('2026-01-01T10:00:09.000Z'));
  });

  it("should not hold a device's call back on the consumer's heartbeat", async () => {
    const { handler, sent } = setup({ machineVulnerabilities: async () => [cve('CVE-1', 9.8)] });
    // A heartbeat the broker never answers: the calls go on all the same.
    const heartbeat = (): Promise<void> => new Promise(() => undefined);
    await handler({ ...message(batch()), heartbeat });
    expect(sent[0]?.devices.map((device) => device.vulnerabilities?.totalCveCount)).toEqual([1, 1, 1]);
  });

  it('should pass a device whose vulnerabilities fail on with a null summary and the reason', async () => {
    const lines: LogLine[] = [];
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async (id) => {
          if (id === 'd2')
            throw new DefenderError(DefenderErrorCode.UNAVAILABLE, 'the API answered 503 five times');
          return [];
        },
      },
      { logger: capturingLogger(lines) },
    );
    await handler(message(batch()));
    const devices = (sent[0] as EnrichedBatch).devices;
    expect(devices.map((d) => d.vulnerabilities === null)).toEqual([false, true, false]);
    expect(devices[1]?.fetchError).toEqual({
      code: 'DEFENDER_UNAVAILABLE',
      message: 'the API answered 503 five times',
    });
    // The error's text is a field of its own, not part of the line's message.
    expect(lines.filter((line) => line.deviceId === 'd2')).toEqual([
      {
        level: 'warn',
        message: 'device vulnerabilities not fetched',
        tenantId: 't1',
        cycleId: 'c1',
        batchIndex: 0,
        deviceId: 'd2',
        code: 'DEFENDER_UNAVAILABLE',
        reason: 'the API answered 503 five times',
      },
    ]);
  });

  it.each([
    [DefenderErrorCode.UNAVAILABLE, 'the API answered 503 six times'],
    // A proxy, firewall or gateway in front of the API refusing every call (a 403 without MDE's error body).
    [DefenderErrorCode.REQUEST_REJECTED, "The Defender API answered 403 without Microsoft's error body"],
  ])(
    "should stop calling for a tenant whose device calls fail 10 times in a row for Defender's own reasons (%s)",
    async (code, reason) => {
      let calls = 0;
      const devices = Array.from({ length: 40 }, (_, i) => ({ id: `d${i}` }));
      const { handler, sent, statuses, forgotten } = setup(
        {
          machineVulnerabilities: async (id) => {
            calls++;
            // A device Defender answers 404 for, then one answered: no run yet; Defender down makes one.
            if (id === 'd0') throw new DefenderError(DefenderErrorCode.NOT_FOUND, 'no such machine');
            if (id === 'd1') return [];
            throw new DefenderError(code, reason);
          },
        },
        { concurrency: 1 },
      );
      await handler(
        message(batch({ devices, lastBatch: false, totalBatches: undefined, totalDevices: undefined })),
      );
      await handler(message(batch({ batchIndex: 1, devices: devices.slice(0, 5) })));
      expect(calls).toBe(12);
      const first = (sent[0] as EnrichedBatch).devices;
      // The device answered 404 stays in the batch without vulnerabilities; of the 40, d1 was answered.
      expect(first[0]).toMatchObject({
        vulnerabilities: null,
        fetchError: { code: DefenderErrorCode.NOT_FOUND },
      });
      expect(first.filter((d) => d.vulnerabilities === null)).toHaveLength(39);
      expect(first[20]?.fetchError?.message).toMatch(/^Microsoft Defender failed 10 device calls in a row/);
      expect((sent[1] as EnrichedBatch).devices.every((d) => d.fetchError?.code === code)).toBe(true);
      expect(statuses[0]).toMatchObject({ state: 'error', lastErrorCode: code });
      // Defender's own failure: the tenant's client and token are still good.
      expect(forgotten).toEqual([]);
    },
  );

  it('should stop calling for a tenant at the first call the Defender client holds back, and say why in its status', async () => {
    let calls = 0;
    const health = new CallHealth('azure-t1', { holdBackAfter: 1 });
    health.start();
    health.leave('failed', 'no answer within 30 s');
    const devices = Array.from({ length: 20 }, (_, i) => ({ id: `d${i}` }));
    const { handler, sent, statuses } = setup(
      {
        machineVulnerabilities: async (id) => {
          calls++;
          if (id === 'd0') return [];
          throw health.heldBack();
        },
      },
      { concurrency: 1 },
    );
    await handler(
      message(batch({ devices, lastBatch: false, totalBatches: undefined, totalDevices: undefined })),
    );
    await handler(message(batch({ batchIndex: 1, devices: devices.slice(0, 5) })));
    expect(calls).toBe(2);
    const first = (sent[0] as EnrichedBatch).devices;
    expect(first[0]?.vulnerabilities).not.toBeNull();
    expect(first.slice(1).every((d) => d.fetchError?.message.includes('its calls are held back until'))).toBe(
      true,
    );
    expect((sent[1] as EnrichedBatch).devices.every((d) => d.vulnerabilities === null)).toBe(true);
    expect(statuses[0]).toMatchObject({
      state: 'error',
      lastErrorCode: 'DEFENDER_UNAVAILABLE',
      lastErrorMessage: expect.stringMatching(
        /^The Defender API of tenant azure-t1 failed 1 calls in a row \(last: no answer within 30 s\)/,
      ),
    });
  });

  it('should serve the lookups UrsVulnerabilityFetchesFailing divides at 0 from its start, so the first failures are an increase', () => {
    const metrics = new Registry({ processMetrics: false });
    setup({}, { metrics });
    const exposed = metrics.expose();
    for (const series of [
      '{mode="per-device",outcome="ok"}',
      '{mode="per-device",outcome="failed"}',
      '{mode="per-device",outcome="skipped"}',
      '{mode="bulk",outcome="ok"}',
      '{mode="bulk",outcome="failed"}',
    ])
      expect(exposed).toContain(`urs_vulnerability_fetches_total${series} 0\n`);
  });

  it('should stop calling for a tenant whose credentials fail, say so in its status, and let its client go', async () => {
    let calls = 0;
    const { handler, sent, statuses, forgotten } = setup(
      {
        machineVulnerabilities: async () => {
          calls++;
          throw new DefenderError(
            DefenderErrorCode.INVALID_SECRET,
            'The client secret is not valid (AADSTS7000215)',
          );
        },
      },
      { concurrency: 1 },
    );
    await handler(message(batch({ lastBatch: false, totalBatches: undefined, totalDevices: undefined })));
    await handler(message(batch({ batchIndex: 1 })));
    expect(calls).toBe(1);
    expect(sent).toHaveLength(2);
    for (const out of sent) {
      for (const device of out.devices)
        expect(device).toMatchObject({
          vulnerabilities: null,
          fetchError: { code: 'DEFENDER_INVALID_SECRET' },
        });
    }
    expect(statuses[0]).toMatchObject({ state: 'error', lastErrorCode: 'DEFENDER_INVALID_SECRET' });
    // Fixed in Entra without a new record (a secret added back, consent granted): the next cycle's client
    // asks for a new token rather than use one kept from before.
    expect(forgotten).toContain('t1');
  });

  it('should fetch the bulk export once per cycle for every batch, and note it in the status', async () => {
    let exports = 0;
    const { handler, sent, statuses } = setup({
      bulkVulnerabilities: async (onRow) => {
        exports++;
        onRow('d1', cve('CVE-9', 9.9));
        // Software without a CVE: the device is in the export, all clear.
        onRow('d2', undefined);
      },
    });
    await handler(
      message(
        batch({
          vulnerabilityMode: 'bulk',
          lastBatch: false,
          totalBatches: undefined,
          totalDevices: undefined,
        }),
      ),
    );
    await handler(message(batch({ vulnerabilityMode: 'bulk', batchIndex: 1, devices: [{ id: 'd4' }] })));
    expect(exports).toBe(1);
    expect(sent[0]?.devices[0]?.vulnerabilities?.criticalCveCount).toBe(1);
    expect(sent[0]?.devices[1]?.vulnerabilities).toEqual({
      criticalCveCount: 0,
      totalCveCount: 0,
      maxCvss: null,
      cvssThreshold: 9,
      topCveIds: [],
    });
    expect(sent[1]?.vulnerabilityMode).toBe('bulk');
    expect(
      statuses.some((status) => status.vulnerabilityMode === 'bulk' && /bulk export/.test(status.note ?? '')),
    ).toBe(true);
    // Counted as devices in the export, not as devices with vulnerabilities: d2 has none.
    expect(statuses.find((status) => status.note)?.note).toMatch(/: 2 devices in it\b/);
  });

  it('should keep its claim on the export while a read takes longer than the claim lasts', async () => {
    const { handler, renewals } = setup({
      bulkVulnerabilities: async () => {
        // 1 s claims (the setup's), renewed every third of a second: the read lasts until the third renewal
        // (a claim's length), however late a loaded machine runs the renewal timer (a fixed 0.9 s read saw
        // one renewal when the machine stalled).
        await waitFor(() => renewals.length >= 3, { intervalMs: 10, description: 'three renewals' });
      },
    });
    await handler(message(batch({ vulnerabilityMode: 'bulk' })));
    expect(renewals.length).toBeGreaterThanOrEqual(3);
    expect(new Set(renewals)).toEqual(new Set(['t1/c1']));
    const after = renewals.length;
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(renewals).toHaveLength(after);
  });

  it('should take the fold a source made on its own thread when it has one, and not read rows here', async () => {
    const { handler, sent } = setup({
      bulkVulnerabilities: async () => {
        throw new Error('the rows are read on the fold thread');
      },
      bulkFold: async () => {
        const folder = new VulnerabilityFolder();
        folder.add('d2', cve('CVE-9', 9.9));
        folder.add('d2', cve('CVE-4', 4));
        return folder;
      },
    });
    await handler(message(batch({ vulnerabilityMode: 'bulk' })));
    expect(sent[0]?.devices.map((device) => device.vulnerabilities?.totalCveCount)).toEqual([0, 2, 0]);
    expect(sent[0]?.devices[1]?.vulnerabilities).toMatchObject({ criticalCveCount: 1, maxCvss: 9.9 });
  });

  it('should wake a batch waiting for the export this process runs as soon as it ends, not at its next look', async () => {
    let finish: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (finish = resolve));
    const { handler, sent } = setup(
      {
        bulkVulnerabilities: async (onRow) => {
          await gate;
          onRow('d4', cve('CVE-9', 9.9));
        },
      },
      // Without the wake-up the second batch would look at the cache again only after a minute.
      { bulkPollMs: 60_000, bulkWaitMs: 120_000 },
    );
    const first = handler(message(batch({ vulnerabilityMode: 'bulk', lastBatch: false })));
    const second = handler(
      message(batch({ vulnerabilityMode: 'bulk', batchIndex: 1, devices: [{ id: 'd4' }] })),
    );
    // Both are in: the first runs the export, the second waits for it.
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(sent).toHaveLength(0);
    finish();
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      Promise.all([first, second]).then(() => 'both enriched'),
      new Promise((resolve) => (timer = setTimeout(() => resolve('second still waiting'), 5_000))),
    ]);
    clearTimeout(timer);
    expect(outcome).toBe('both enriched');
    expect(sent.map((enriched) => enriched.batchIndex).sort()).toEqual([0, 1]);
    expect(
      sent.find((enriched) => enriched.batchIndex === 1)?.devices[0]?.vulnerabilities?.criticalCveCount,
    ).toBe(1);
  });

  it('should wait for a tenant record missing from the rebuilt store and enrich the batch once the registrar writes it', async () => {
    const lines: LogLine[] = [];
    let looks = 0;
    const { handler, sent } = setup(
      { machineVulnerabilities: async () => [cve('CVE-1', 9.8)] },
      {
        // Redis was wiped: the record is back on the third look (the registrar's rebuild).
        tenants: {
          // Rebuilt: a new tenant's record sent on urs.tenants, not yet written to Redis.
          lookup: async () => ({ record: ++looks >= 3 ? record : null, rebuilt: true }),
          updatePollingStatus: async () => true,
        },
        logger: capturingLogger(lines),
        tenantWaitMs: 1_000,
        tenantPollMs: 5,
      },
    );
    await handler(message(batch()));
    expect(sent).toHaveLength(1);
    const devices = sent[0]?.devices ?? [];
    expect(devices.map((d) => d.machine.id)).toEqual(['d1', 'd2', 'd3']);
    for (const device of devices) expect(device.vulnerabilities?.criticalCveCount).toBe(1);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 'warn',
        message: expect.stringMatching(/tenant record missing/),
        tenantId: 't1',
        cycleId: 'c1',
      }),
    );
  });

  it('should fail, not send, a batch whose tenant record stays missing after the wait, with the reason for the dead letter', async () => {
    const lines: LogLine[] = [];
    let lookups = 0;
    const { handler, sent } = setup(
      {},
      {
        tenants: {
          lookup: async () => {
            lookups++;
            return { record: null, rebuilt: true };
          },
          updatePollingStatus: async () => true,
        },
        logger: capturingLogger(lines),
        tenantWaitMs: 50,
        tenantPollMs: 5,
      },
    );
    const waits = () => lines.filter((line) => /waiting for the registrar/.test(line.message)).length;
    // The wait on a clock of the test's own: a loaded machine that runs the 5 ms timers late looks fewer times
    // in 50 ms of its own.
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
    try {
      const started = Date.now();
      const failed = expect(
        handler(message(batch({ tenantId: 'gone', lastBatch: false }))),
      ).rejects.toMatchObject({
        code: 'TENANT_UNKNOWN',
        // Dead-lettered at once: the wait was the retry, and the runner's retries would only repeat it.
        canRetry: false,
        message: expect.stringMatching(/registrar.*closed as partial/),
      });
      await jest.advanceTimersByTimeAsync(50);
      await failed;
      expect(Date.now() - started).toBe(50);
    } finally {
      jest.useRealTimers();
    }
    // The first look, then one every 5 ms of the 50 ms wait.
    expect(lookups).toBe(1 + 50 / 5);
    expect(waits()).toBe(1);
    // Never sent on without vulnerabilities: its scores would replace the devices' last ones over VMS, and
    // the cycle would be summarised as complete.
    expect(sent).toEqual([]);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 'warn',
        tenantId: 'gone',
        cycleId: 'c1',
        code: 'TENANT_UNKNOWN',
        reason: expect.stringMatching(/registrar/),
      }),
    );
    // The cycle's later batches look again (once) but do not wait again.
    const before = lookups;
    await expect(handler(message(batch({ tenantId: 'gone', batchIndex: 1 })))).rejects.toMatchObject({
      code: 'TENANT_UNKNOWN',
    });
    expect(lookups - before).toBe(1);
    expect(waits()).toBe(1);
    expect(sent).toEqual([]);
  });

  it('should hold, not wait for nor dead-letter, a batch whose tenant record is missing while the registrar has not rebuilt the records', async () => {
    const lines: LogLine[] = [];
    let restored = false;
    const lookup = async () => ({ record: restored ? record : null, rebuilt: restored });
    const { handler, sent, lostBatches } = setup(
      { machineVulnerabilities: async () => [cve('CVE-1', 9.8)] },
      {
        // Redis was wiped: no record, and no `tenants-rebuilt` marker, until the registrar's rebuild.
        tenants: { lookup, updatePollingStatus: async () => true },
        logger: capturingLogger(lines),
        tenantWaitMs: 50,
        tenantPollMs: 5,
      },
    );
    // Retryable and an infrastructure fault: the bus holds the batch as on a Redis outage, however long the rebuild takes.
    await expect(handler(message(batch()))).rejects.toMatchObject({
      code: 'TENANTS_NOT_REBUILT',
      canRetry: true,
      infrastructure: true,
    });
    await expect(handler(message(batch()))).rejects.toMatchObject({ code: 'TENANTS_NOT_REBUILT' });
    expect(sent).toEqual([]);
    expect(lostBatches).toEqual([]);
    expect(lines.filter((line) => /waiting for the registrar/.test(line.message))).toEqual([]);
    restored = true;
    await handler(message(batch()));
    expect(sent).toHaveLength(1);
    const devices = sent[0]?.devices ?? [];
    expect(devices.map((d) => d.machine.id)).toEqual(['d1', 'd2', 'd3']);
    for (const device of devices) expect(device.vulnerabilities?.criticalCveCount).toBe(1);
  });

  it("should leave a batch whose secret this replica's key does not open for a retry, never the tenant's failure", async () => {
    const sealed = sealedTenant().record('t1');
    // A replica started with another URS_SECRET_KEY under the same URS_SECRET_KEY_ID.
    const { sources, close } = localSources(randomSealer());
    const lines: LogLine[] = [];
    const { handler, sent, statuses } = setup(
      {},
      {
        sources,
        tenants: {
          lookup: async () => ({ record: sealed, rebuilt: true }),
          updatePollingStatus: async () => true,
        },
        logger: capturingLogger(lines),
      },
    );
    try {
      await expect(handler(message(batch()))).rejects.toMatchObject({
        code: 'SECRET_UNREADABLE',
        canRetry: true,
      });
      // Nothing sent as the tenant's setup error, and the tenant's status is not touched.
      expect(sent).toEqual([]);
      expect(statuses).toEqual([]);
      expect(lines).toContainEqual(
        expect.objectContaining({
          level: 'error',
          tenantId: 't1',
          cycleId: 'c1',
          code: 'SECRET_UNREADABLE',
          variables: expect.arrayContaining(['URS_SECRET_KEY']),
        }),
      );
      // Not remembered for the cycle: tried again, the batch fails the same way rather than going on empty.
      await expect(handler(message(batch({ batchIndex: 1 })))).rejects.toMatchObject({
        code: 'SECRET_UNREADABLE',
      });
      expect(sent).toEqual([]);
    } finally {
      close();
    }
  });

  it('should fail a batch retryably when the service stops mid-batch', async () => {
    const stop = new AbortController();
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async () => {
          stop.abort();
          throw new Error('aborted');
        },
      },
      { signal: stop.signal },
    );
    await expect(handler(message(batch()))).rejects.toMatchObject({ code: 'STOPPING', canRetry: true });
    expect(sent).toEqual([]);
  });

  it('should fail a batch retryably and stop calling when the runner gives the message up', async () => {
    const givenUp = new AbortController();
    const seenSignals: (AbortSignal | undefined)[] = [];
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async (_id, signal) => {
          seenSignals.push(signal);
          givenUp.abort();
          throw new Error('aborted');
        },
      },
      { signal: new AbortController().signal },
    );
    await expect(handler({ ...message(batch()), signal: givenUp.signal })).rejects.toMatchObject({
      code: 'STOPPING',
      canRetry: true,
    });
    expect(sent).toEqual([]);
    // Two workers each took one device before the abort; none took the third.
    expect(seenSignals.length).toBeLessThanOrEqual(2);
    expect(seenSignals.every((signal) => signal?.aborted)).toBe(true);
  });

  it('should give the bulk export claim back when the service stops during the export', async () => {
    const stop = new AbortController();
    const { handler, bulkCache } = setup(
      {
        bulkVulnerabilities: async () => {
          stop.abort();
          throw new Error('aborted');
        },
      },
      { signal: stop.signal },
    );
    await expect(handler(message(batch({ vulnerabilityMode: 'bulk' })))).rejects.toMatchObject({
      code: 'STOPPING',
    });
    expect(await bulkCache.state('t1', 'c1')).toEqual({ state: 'absent' });
  });
});

import type { OutboundMessage, Publisher } from '@urs/bus';
import { toDeviceRecord, type DeviceBatch, type Machine } from '@urs/contracts';
import { UrsError, retryPolicy } from '@urs/resilience';
import { parseProfile, profileHash } from '@urs/scoring';
import type { CycleStore } from '@urs/store';
import { topicNotAuthorised } from '@urs/testkit';
import {
  CycleAbortedError,
  CycleListedNotRecordedError,
  cycleIdOf,
  runCycle,
  type CycleDeps,
} from '../src/cycle';
import { createBatchFit } from '../src/batch-fit';
import type { DefenderGateway, DevicePage, TenantCredentials } from '../src/defender';
import { cycleDepsSending, fitAfterTaking, recordTooLarge, sealedRecord as record } from './support/cycle';

function pages(...sizes: number[]): DevicePage[] {
  let n = 0;
  return sizes.map((size) => ({
    devices: Array.from({ length: size }, () => {
      const id = `m${n++}`;
      return { machine: { id } as Machine, merged: false };
    }),
  }));
}

/**
 * `failAfter`: thrown by the listing once its pages are listed (a listing that fails midway). `withdrawn`: what
 * the cycle store answers a withdrawal (false: a batch of the cycle was recorded already).
 */
function setup(listing: DevicePage[] | Error, capacity = 1_000, failAfter?: Error, withdrawn = true) {
  const sent: DeviceBatch[] = [];
  const events: string[] = [];
  const credentials: TenantCredentials[] = [];
  const plannedMinutes: number[] = [];
  const listedNotes: (string | null | undefined)[] = [];
  /** The totals kept as pending (`listingPending`), each with the batches sent when it was kept. */
  const pending: string[] = [];
  /** The totals kept as pending now (dropped by `dropPendingListing`), and their batch count as each batch was sent. */
  let pendingNow: Parameters<CycleStore['listed']>[2] | undefined;
  const pendingAtSend: (number | undefined)[] = [];
  const versions: { tenantId: string; revision: number }[] = [];
  const publisher = {
    async send(_topic: string, _contract: string, messages: OutboundMessage<DeviceBatch>[]) {
      for (const m of messages) {
        expect(m.key).toBe('acme');
        sent.push(m.value as DeviceBatch);
        pendingAtSend.push(pendingNow?.totalBatches);
        events.push(`batch ${(m.value as DeviceBatch).batchIndex}`);
      }
    },
  } as unknown as Publisher;
  const cycles = {
    async begin(cycle: { deadlineAt: string }) {
      events.push(`begin ${cycle.deadlineAt}`);
    },
    async listingPending(lease: unknown, _c: string, totals: Parameters<CycleStore['listed']>[2]) {
      // Under the cycle's lease (see `input`): Redis writes them only while it is this poller's.
      expect(lease).toEqual({ tenantId: 'acme', token: '1:poller-a' });
      pending.push(
        `${totals.totalBatches}/${totals.totalDevices} ${totals.vulnerabilityMode} ${totals.listedAt} after ${sent.length}`,
      );
      pendingNow = totals;
      return true;
    },
    async mergedDevices(_t: string, _c: string, deviceIds: string[]) {
      events.push(`merged ${deviceIds.join(',')}`);
    },
    async dropPendingListing() {
      pending.push(`dropped after ${sent.length}`);
      pendingNow = undefined;
    },
    async listed(_t: string, _c: string, totals: Parameters<CycleStore['listed']>[2]) {
      events.push(`listed ${totals.totalBatches}/${totals.totalDevices} ${totals.vulnerabilityMode}`);
      listedNotes.push(totals.note);
    },
    async abandon(
      _t: string,
      _c: string,
      abandonment: Parameters<CycleStore['abandon']>[2],
      closeAt: number,
    ) {
      events.push(
        `abandon ${abandonment.batches}/${abandonment.devices} ${abandonment.code} ${abandonment.at} ${closeAt}`,
      );
      return true;
    },
    async withdraw(_t: string, _c: string, abandonment: Parameters<CycleStore['withdraw']>[2]) {
      events.push(`withdraw ${abandonment.devices} ${abandonment.code} ${abandonment.at}`);
      return withdrawn;
    },
  } as unknown as CycleStore;
  const defender: DefenderGateway = {
    forTenant(tenant, credentialsOf) {
      versions.push(tenant);
      credentials.push(credentialsOf());
      return {
        async *listDevicePages() {
          if (listing instanceof Error) throw listing;
          for (const page of listing) yield page;
          if (failAfter) throw failAfter;
        },
      };
    },
    forget: () => undefined,
    close: () => undefined,
    planMode: (count, minutes) => {
      plannedMinutes.push(minutes);
      return { mode: count <= capacity ? 'per-device' : 'bulk', perDeviceCapacity: capacity };
    },
  };
  const deps: CycleDeps = {
    ...cycleDepsSending(defender, fitAfterTaking(), {
      publisher,
      cycles,
      deviceBatchesTopic: 'urs.device-batches',
    }),
    now: () => 1_000,
  };
  return {
    deps,
    sent,
    events,
    credentials,
    versions,
    plannedMinutes,
    listedNotes,
    pending,
    pendingAtSend,
  };
}

const input = (
  signal = new AbortController().signal,
  profile: Record<string, unknown> | null = null,
  leaseHeld = () => true,
) => ({
  record: record(profile),
  cycleId: cycleIdOf('acme', 0),
  lease: { tenantId: 'acme', token: '1:poller-a' },
  startedAt: 0,
  intervalMs: 600_000,
  signal,
  leaseHeld,
});

describe('runCycle', () => {
  it('runCycle should plan per-device calls for the time to its deadline, not for its whole interval', async () => {
    // A 10-minute interval, a cycle of at most 5 (maxCycleMs 300,000): calls planned for 5 minutes.
    const { deps, plannedMinutes, events } = setup(pages(10));
    await runCycle(deps, input());
    expect(plannedMinutes).toEqual([5]);
    expect(events[0]).toBe(`begin ${new Date(300_000).toISOString()}`);
    const within = setup(pages(10));
    await runCycle({ ...within.deps, maxCycleMs: 3_600_000 }, input());
    expect(within.plannedMinutes).toEqual([10]);
  });

  it('runCycle should emit pages larger than a batch as full batches in listing order, holding back only the rest', async () => {
    const { deps, sent } = setup(pages(2_600, 1_250, 10), 10);
    await runCycle(deps, input());
    expect(sent.map((b) => b.devices.length)).toEqual([500, 500, 500, 500, 500, 500, 500, 360]);
    expect(sent.flatMap((b) => b.devices.map((d) => d.id))).toEqual(
      Array.from({ length: 3_860 }, (_, n) => `m${n}`),
    );
    expect(sent.map((b) => b.vulnerabilityMode)).toEqual(Array(8).fill('bulk'));
  });

  it('runCycle should split the fleet into batches of at most 500, the last with the totals', async () => {
    const { deps, sent, events, credentials, versions, listedNotes } = setup(pages(300, 300, 403));
    const result = await runCycle(deps, input());
    expect(sent.map((b) => b.devices.length)).toEqual([500, 500, 3]);
    expect(sent.map((b) => [b.batchIndex, b.lastBatch])).toEqual([
      [0, false],
      [1, false],
      [2, true],
    ]);
    expect(sent[2]).toMatchObject({
      totalBatches: 3,
      totalDevices: 1_003,
      cycleStartedAt: '1970-01-01T00:00:00.000Z',
      cycleId: 'acme-0000000000000',
    });
    expect(sent[0]?.totalBatches).toBeUndefined();
    expect(new Set(sent.flatMap((b) => b.devices.map((d) => d.id))).size).toBe(1_003);
    expect(events[0]).toBe('begin 1970-01-01T00:05:00.000Z');
    expect(events.at(-1)).toBe('listed 3/1003 bulk');
    expect(result).toMatchObject({
      totalDevices: 1_003,
      totalBatches: 3,
      vulnerabilityMode: 'bulk',
      merged: 0,
    });
    expect(result.note).toMatch(/1003 devices exceed the 1000 per-device calls/);
    expect(listedNotes).toEqual([result.note]);
    expect(credentials[0]).toMatchObject({ clientSecret: 'Sup3r~secret', region: 'eu', cloud: 'commercial' });
    // The gateway keeps the tenant's client for this revision of its record: the cycle does not close it.
    expect(versions).toEqual([{ tenantId: 'acme', revision: 1 }]);
  });

  it('runCycle should keep the totals as pending right before it sends the last batch, and only then', async () => {
    const { deps, pending, events } = setup(pages(300, 300, 403));
    await runCycle(deps, input());
    // Kept once its two first batches were sent, before the last one: a poller stopped after that send and
    // before the listing is recorded leaves the next holder of the lease the cycle's totals.
    expect(pending).toEqual([`3/1003 bulk ${new Date(1_000).toISOString()} after 2`]);
    expect(events.at(-1)).toBe('listed 3/1003 bulk');
    const failing = setup(pages(300, 300, 403));
    // Redis failing that write: the last batch still goes, and the listing is recorded after it.
    failing.deps.cycles.listingPending = async () => {
      throw new Error('Connection is closed.');
    };
    await runCycle(failing.deps, input());
    expect(failing.sent.map((b) => b.batchIndex)).toEqual([0, 1, 2]);
    expect(failing.events.at(-1)).toBe('listed 3/1003 bulk');
  });

  it('runCycle should use per-device mode when the whole fleet fits the quota', async () => {
    const { deps, sent } = setup(pages(500, 500), 1_000);
    const result = await runCycle(deps, input());
    expect(sent.map((b) => [b.devices.length, b.vulnerabilityMode, b.lastBatch])).toEqual([
      [500, 'per-device', false],
      [500, 'per-device', true],
    ]);
    expect(result.note).toBeNull();
  });

  it('runCycle should count toward bulk mode only the devices whose vulnerabilities are asked for', async () => {
    // 1,400 devices, 600 of them excluded from vulnerability management: 800 calls fit the quota of 1,000.
    const listing = pages(700, 700);
    const devices = listing.flatMap((page) => page.devices);
    devices.slice(0, 600).forEach(({ machine }) => (machine.isExcluded = true));
    // Not onboarded (a network device is assessed without a sensor), or of no known status: asked for.
    const statuses = ['CanBeOnboarded', 'unsupported', 'InsufficientInfo', 'Unknown'];
    devices.slice(600, 800).forEach(({ machine }, n) => (machine.onboardingStatus = statuses[n % 4]));
    const { deps, sent } = setup(listing, 1_000);
    const result = await runCycle(deps, input());
    expect(result).toMatchObject({ totalDevices: 1_400, vulnerabilityMode: 'per-device', note: null });
    expect(new Set(sent.map((b) => b.vulnerabilityMode))).toEqual(new Set(['per-device']));
    // What tells the vuln-fetcher not to ask travels with the device.
    expect(sent[0]?.devices[0]).toEqual({ id: 'm0', isExcluded: true });

    // 1,001 asked for do not fit, devices not onboarded among them: bulk, and the note says the others cost nothing.
    const more = pages(1_601);
    more[0]?.devices.slice(0, 600).forEach(({ machine }) => (machine.isExcluded = true));
    more[0]?.devices.slice(600, 700).forEach(({ machine }) => (machine.onboardingStatus = 'CanBeOnboarded'));
    const bulk = setup(more, 1_000);
    const bulkResult = await runCycle(bulk.deps, input());
    expect(bulkResult.vulnerabilityMode).toBe('bulk');
    expect(bulkResult.note).toMatch(
      /1001 devices exceed the 1000 per-device calls .*\(600 more, excluded from vulnerability management/,
    );
  });

  it('runCycle should emit one empty last batch for an empty fleet', async () => {
    const { deps, sent, events } = setup([]);
    await runCycle(deps, input());
    expect(sent).toEqual([
      expect.objectContaining({
        batchIndex: 0,
        lastBatch: true,
        totalBatches: 1,
        totalDevices: 0,
        devices: [],
      }),
    ]);
    expect(events.at(-1)).toBe('listed 1/0 per-device');
  });

  it("runCycle should leave out merged records and take the CVSS threshold and the profile's hash from the profile", async () => {
    const listing = pages(4);
    (listing[0]?.devices[1] as { merged: boolean }).merged = true;
    const { deps, sent } = setup(listing);
    const profile = { operational: { criticalCves: { cvssThreshold: 7.5 } } };
    const result = await runCycle(deps, input(undefined, profile));
    expect(sent[0]?.devices.map((d) => d.id)).toEqual(['m0', 'm2', 'm3']);
    expect(sent[0]?.cvssThreshold).toBe(7.5);
    expect(sent[0]?.profileHash).toBe(profileHash(parseProfile(profile)));
    expect(result).toMatchObject({ totalDevices: 3, merged: 1 });
  });

  it('runCycle should record the devices listed merged before it sends the last batch, once, and nothing when none is', async () => {
    // Bulk from the first page on (capacity 10): batches flow as the listing goes, merged devices on both pages.
    const listing = pages(600, 600);
    for (const n of [3, 700, 1_199])
      (listing.flatMap((page) => page.devices)[n] as { merged: boolean }).merged = true;
    const { deps, events } = setup(listing, 10);
    // The last batch refused once as too large goes in halves: the devices are recorded before the first.
    const { publisher } = refusingPublisher(
      deps.publisher,
      (batch) => batch.lastBatch && batch.devices.length > 100,
    );
    const result = await runCycle({ ...deps, publisher }, input());
    expect(events.slice(1)).toEqual([
      'batch 0',
      'batch 1',
      'merged m3,m700,m1199',
      'batch 2',
      'batch 3',
      'listed 4/1197 bulk',
    ]);
    expect(result).toMatchObject({ totalDevices: 1_197, merged: 3 });

    const none = setup(pages(600), 10);
    await runCycle(none.deps, input());
    expect(none.events.filter((event) => event.startsWith('merged'))).toEqual([]);
  });

  it('runCycle should try the record of the devices listed merged again, as the listing, and send the last batch once it is kept', async () => {
    const listing = pages(600, 600);
    (listing[1]?.devices[0] as { merged: boolean }).merged = true;
    const { deps, events, sent } = setup(listing, 10);
    let failures = 1;
    const record = deps.cycles.mergedDevices.bind(deps.cycles);
    deps.cycles.mergedDevices = async (...args) => {
      if (failures-- > 0) throw new Error('Connection is closed.');
      return record(...args);
    };
    const noWait = { ...deps, listedRetry: retryPolicy({ maxAttempts: 3, initialDelayMs: 0 }) };
    await runCycle(noWait, input());
    expect(sent.map((batch) => batch.lastBatch)).toEqual([false, false, true]);
    expect(events.filter((event) => event.startsWith('merged'))).toEqual(['merged m600']);
  });

  it('runCycle should send no last batch, and record the cycle abandoned, when the devices listed merged cannot be recorded', async () => {
    const listing = pages(600, 600);
    (listing[1]?.devices[0] as { merged: boolean }).merged = true;
    const { deps: failing, events, sent } = setup(listing, 10);
    failing.cycles.mergedDevices = async () => {
      throw new Error('Connection is closed.');
    };
    const deps = { ...failing, listedRetry: retryPolicy({ maxAttempts: 2, initialDelayMs: 0 }) };
    await expect(runCycle(deps, input())).rejects.toThrow('Connection is closed.');
    expect(sent.map((batch) => batch.lastBatch)).toEqual([false, false]);
    expect(events.at(-1)).toMatch(/^abandon 2\/1199 /);
  });

  it('runCycle should send each device as its device record, not the whole listed machine', async () => {
    const machine: Machine = {
      id: 'm0',
      computerDnsName: 'pc0.contoso.com',
      lastSeen: '2026-01-21T09:00:00.1234567Z',
      riskScore: 'High',
      onboardingStatus: 'Onboarded',
      machineTags: ['vip'],
      rbacGroupName: 'servers',
      osPlatform: 'Windows11',
      firstSeen: '2024-01-01T00:00:00Z',
      vmMetadata: { vmId: 'v1' },
      isExcluded: false,
    };
    const { deps, sent } = setup([{ devices: [{ machine, merged: false }] }]);
    await runCycle(deps, input());
    expect(sent[0]?.devices).toEqual([toDeviceRecord(machine)]);
    expect(sent[0]?.devices[0]).toEqual({
      id: 'm0',
      computerDnsName: 'pc0.contoso.com',
      lastSeen: '2026-01-21T09:00:00.1234567Z',
      riskScore: 'High',
      onboardingStatus: 'Onboarded',
      machineTags: ['vip'],
      rbacGroupName: 'servers',
      // Since when it exists (the bulk export's snapshot), and whether Microsoft holds its vulnerabilities.
      firstSeen: '2024-01-01T00:00:00Z',
      isExcluded: false,
    });
  });

  it('runCycle should begin no cycle when the listing fails before any batch', async () => {
    const failure = new Error('token refused');
    const { deps, events } = setup(failure);
    await expect(runCycle(deps, input())).rejects.toBe(failure);
    expect(events).toEqual([]);
  });

  it('runCycle should stop emitting once aborted', async () => {
    const abort = new AbortController();
    abort.abort();
    const { deps, sent } = setup(pages(600));
    await expect(runCycle(deps, input(abort.signal))).rejects.toBeInstanceOf(CycleAbortedError);
    expect(sent).toEqual([]);
  });

  it('runCycle should record a cycle whose listing failed after it emitted batches as abandoned, with what it emitted', async () => {
    const failure = new UrsError('DEFENDER_UNAVAILABLE', 'Defender answered 503', { canRetry: true });
    // Bulk from the first page on (capacity 10): 1,200 devices listed, two full batches emitted, 200 held back.
    const { deps, events } = setup(pages(600, 600), 10, failure);
    await expect(runCycle(deps, input())).rejects.toBe(failure);
    expect(events.slice(1)).toEqual([
      'batch 0',
      'batch 1',
      `abandon 2/1200 DEFENDER_UNAVAILABLE ${new Date(1_000).toISOString()} ${1_000 + 60_000}`,
    ]);
  });

  it('runCycle should record an aborted cycle as abandoned only once it emitted a batch', async () => {
    const abort = new AbortController();
    const { deps, events } = setup(pages(600, 600), 10);
    const publisher = deps.publisher;
    // The lease is lost while the first batch is sent.
    const send: Publisher['send'] = async (...args) => {
      await publisher.send(...args);
      abort.abort();
    };
    await expect(
      runCycle({ ...deps, publisher: { ...publisher, send } }, input(abort.signal)),
    ).rejects.toBeInstanceOf(CycleAbortedError);
    expect(events.slice(1)).toEqual([
      'batch 0',
      `abandon 1/600 CYCLE_ABORTED ${new Date(1_000).toISOString()} 61000`,
    ]);
    const never = setup(pages(600), 10);
    const aborted = new AbortController();
    aborted.abort();
    await expect(runCycle(never.deps, input(aborted.signal))).rejects.toBeInstanceOf(CycleAbortedError);
    expect(never.events).toEqual([]);
  });

  it('runCycle should send no batch once its lease may have lapsed, though the cycle store answered before', async () => {
    const { deps, events, sent } = setup(pages(600, 600), 10);
    let held = true;
    const cycles = deps.cycles;
    // Renewals failing meanwhile: the lease's end passes while the cycle's begin is answered.
    const begin: CycleStore['begin'] = async (cycle) => {
      await cycles.begin(cycle);
      held = false;
    };
    await expect(
      runCycle(
        { ...deps, cycles: { ...cycles, begin } },
        input(undefined, null, () => held),
      ),
    ).rejects.toBeInstanceOf(CycleAbortedError);
    expect(sent).toEqual([]);
    expect(events.slice(1)).toEqual([`withdraw 600 CYCLE_ABORTED ${new Date(1_000).toISOString()}`]);
  });

  it('runCycle should withdraw a begun cycle whose first batch could not be sent, so that no summary is owed for it', async () => {
    const kafkaAway = new UrsError('KAFKA_UNAVAILABLE', 'the broker is not reachable', { canRetry: true });
    const failingSend = async (): Promise<never> => {
      throw kafkaAway;
    };
    const { deps, events } = setup(pages(600, 600), 10);
    await expect(
      runCycle({ ...deps, publisher: { ...deps.publisher, send: failingSend } }, input()),
    ).rejects.toBe(kafkaAway);
    expect(events.slice(1)).toEqual([`withdraw 600 KAFKA_UNAVAILABLE ${new Date(1_000).toISOString()}`]);

    // The send failed only in its answer and its batch is recorded already: abandoned, closed as its batches say.
    const landed = setup(pages(600, 600), 10, undefined, false);
    await expect(
      runCycle({ ...landed.deps, publisher: { ...landed.deps.publisher, send: failingSend } }, input()),
    ).rejects.toBe(kafkaAway);
    expect(landed.events.slice(1)).toEqual([
      `withdraw 600 KAFKA_UNAVAILABLE ${new Date(1_000).toISOString()}`,
      `abandon 0/600 KAFKA_UNAVAILABLE ${new Date(1_000).toISOString()} ${1_000 + 60_000}`,
    ]);
  });

  it('runCycle should tell batchTaken of each batch Kafka took, and of none it refused', async () => {
    let taken = 0;
    const { deps } = setup(pages(600, 600), 10);
    await runCycle(deps, { ...input(), batchTaken: () => taken++ });
    expect(taken).toBe(3);

    taken = 0;
    let sends = 0;
    const refusedAfterOne = setup(pages(600, 600), 10);
    const send = refusedAfterOne.deps.publisher.send.bind(refusedAfterOne.deps.publisher);
    const publisher = {
      ...refusedAfterOne.deps.publisher,
      send: async (...args: Parameters<Publisher['send']>) => {
        if (++sends > 1) throw topicNotAuthorised();
        await send(...args);
      },
    } as Publisher;
    await expect(
      runCycle({ ...refusedAfterOne.deps, publisher }, { ...input(), batchTaken: () => taken++ }),
    ).rejects.toThrow('Topic authorization failed');
    expect(taken).toBe(1);
  });

  /** `setup`'s publisher, refusing as too large every batch `tooLarge` says so of. */
  function refusingPublisher(
    publisher: Publisher,
    tooLarge: (batch: DeviceBatch) => boolean,
  ): { publisher: Publisher; refused: number[] } {
    const refused: number[] = [];
    const send = publisher.send.bind(publisher);
    return {
      refused,
      publisher: {
        ...publisher,
        send: async (...args: Parameters<Publisher['send']>) => {
          const batch = args[2][0]?.value as DeviceBatch;
          if (tooLarge(batch)) {
            refused.push(batch.devices.length);
            throw recordTooLarge();
          }
          await send(...args);
        },
      } as Publisher,
    };
  }

  it('runCycle should split a batch Kafka refuses as too large in two, and so on, numbering the halves as batches of their own', async () => {
    const { deps, sent, events } = setup(pages(600, 600), 10);
    const { publisher, refused } = refusingPublisher(deps.publisher, (batch) => batch.devices.length > 300);
    const listed = await runCycle({ ...deps, publisher }, input());
    expect(refused).toEqual([500, 500]);
    expect(sent.map((batch) => [batch.batchIndex, batch.devices.length, batch.lastBatch])).toEqual([
      [0, 250, false],
      [1, 250, false],
      [2, 250, false],
      [3, 250, false],
      [4, 200, true],
    ]);
    // Every device sent once, in the listing's order.
    expect(sent.flatMap((batch) => batch.devices.map((device) => device.id))).toEqual(
      Array.from({ length: 1_200 }, (_, n) => `m${n}`),
    );
    expect(sent[4]).toMatchObject({ totalBatches: 5, totalDevices: 1_200 });
    expect(listed).toMatchObject({ totalBatches: 5, totalDevices: 1_200 });
    expect(events).toContain('listed 5/1200 bulk');
  });

  it('runCycle should keep no totals as pending before a last batch larger than any the topic took, and keep them before one no larger', async () => {
    // A replica that never sent a batch yet: nothing tells that the topic takes its first cycle's last batch.
    const batchFit = createBatchFit();
    const first = setup(pages(100));
    await runCycle({ ...first.deps, batchFit }, input());
    expect(first.pending).toEqual([]);
    expect(first.events.at(-1)).toBe('listed 1/100 per-device');
    // The same batch once the topic took it: the next cycle keeps its totals before it.
    const next = setup(pages(100));
    await runCycle({ ...next.deps, batchFit }, input());
    expect(next.pending).toEqual([`1/100 per-device ${new Date(1_000).toISOString()} after 0`]);
    // One device more: larger than any batch taken, no totals kept.
    const larger = setup(pages(101));
    await runCycle({ ...larger.deps, batchFit }, input());
    expect(larger.pending).toEqual([]);
    expect(larger.events.at(-1)).toBe('listed 1/101 per-device');
  });

  it('runCycle should keep no totals as pending before a last batch no smaller than one the topic refused as too large since it took a larger one', async () => {
    const batchFit = fitAfterTaking();
    const { deps, sent, pending } = setup(pages(400));
    // The topic's limit lowered: batches of more than 100 devices refused.
    const { publisher } = refusingPublisher(deps.publisher, (batch) => batch.devices.length > 100);
    await runCycle({ ...deps, publisher, batchFit }, input());
    expect(sent.map((batch) => batch.devices.length)).toEqual([100, 100, 100, 100]);
    // Kept before the batch of 400 (the topic took a larger record), dropped as it was refused, and kept again
    // before the last half, smaller than the halves refused.
    expect(pending).toEqual([
      `1/400 per-device ${new Date(1_000).toISOString()} after 0`,
      'dropped after 0',
      `4/400 per-device ${new Date(1_000).toISOString()} after 3`,
    ]);
    // A cycle whose last batch is as large as one refused keeps no totals before it.
    const again = setup(pages(200));
    const refusing = refusingPublisher(again.deps.publisher, (batch) => batch.devices.length > 100);
    await runCycle({ ...again.deps, publisher: refusing.publisher, batchFit }, input());
    expect(again.pending.filter((kept) => kept.startsWith('1/'))).toEqual([]);
  });

  it('runCycle should keep no totals as pending while it sends the halves of a last batch refused as too large, but for the last half', async () => {
    const { deps, sent, pending, pendingAtSend } = setup(pages(400));
    const { publisher, refused } = refusingPublisher(deps.publisher, (batch) => batch.devices.length > 100);
    const listed = await runCycle({ ...deps, publisher }, input());
    expect(refused).toEqual([400, 200, 200]);
    // Kept as the one batch of 400 goes, refused: dropped before the first half goes, since a poller that
    // stopped after it would leave a count of one batch to the next holder, and the cycle close complete
    // without its other half. The last half's send carries the totals, and they are kept again before it.
    expect(sent.map((batch) => [batch.batchIndex, batch.lastBatch])).toEqual([
      [0, false],
      [1, false],
      [2, false],
      [3, true],
    ]);
    expect(pendingAtSend).toEqual([undefined, undefined, undefined, 4]);
    expect(pending.at(-1)).toMatch(/^4\/400 per-device .* after 3$/);
    expect(listed).toMatchObject({ totalBatches: 4, totalDevices: 400 });
  });

  it('runCycle should fail the cycle, sending no half, when the totals kept before a last batch refused as too large cannot be dropped', async () => {
    const { deps, sent, events } = setup(pages(400));
    const { publisher } = refusingPublisher(deps.publisher, (batch) => batch.devices.length > 100);
    deps.cycles.dropPendingListing = async () => {
      throw new Error('Connection is closed.');
    };
    await expect(runCycle({ ...deps, publisher }, input())).rejects.toThrow('Connection is closed.');
    expect(sent).toEqual([]);
    // Begun and never sent a batch: withdrawn.
    expect(events.at(-1)).toMatch(/^withdraw /);
  });

  it('runCycle should fail the cycle when one device alone is refused as too large, its batches up to it sent', async () => {
    const { deps, sent } = setup(pages(600), 10);
    const { publisher, refused } = refusingPublisher(deps.publisher, (batch) =>
      batch.devices.some((device) => device.id === 'm3'),
    );
    await expect(runCycle({ ...deps, publisher }, input())).rejects.toMatchObject({
      code: 'RECORD_TOO_LARGE',
    });
    // Halved down to the device alone: 500, 250, 125, 63, 32, 16, 8, 4, 2, 1.
    expect(refused).toEqual([500, 250, 125, 63, 32, 16, 8, 4, 2, 1]);
    expect(sent.flatMap((batch) => batch.devices.map((device) => device.id))).toEqual(['m0', 'm1', 'm2']);
  });

  it("runCycle should stop listing at the next page once the replica's batches are refused, sending nothing", async () => {
    const { deps, sent, events } = setup(pages(10, 10, 10, 10), 5);
    let listed = 0;
    const listing = deps.defender.forTenant.bind(deps.defender);
    deps.defender = {
      ...deps.defender,
      forTenant: (tenant, credentialsOf) => {
        const client = listing(tenant, credentialsOf);
        return {
          async *listDevicePages(signal: AbortSignal) {
            for await (const page of client.listDevicePages(signal)) {
              listed++;
              yield page;
            }
          },
        };
      },
    };
    const refused = new UrsError('BATCHES_REFUSED', 'refused', { cause: topicNotAuthorised() });
    // Refused once another tenant's cycle met the refusal, while this one lists its first page.
    const batchesRefused = () => (listed >= 1 ? refused : undefined);
    await expect(runCycle(deps, { ...input(), batchesRefused })).rejects.toBe(refused);
    expect(listed).toBe(1);
    expect(sent).toEqual([]);
    expect(events).toEqual([]);
  });

  it('runCycle should not record a cycle whose every batch went out as abandoned', async () => {
    const { deps, events } = setup(pages(10));
    deps.cycles.listed = async () => {
      throw new Error('Connection is closed.');
    };
    const noWait = { ...deps, listedRetry: retryPolicy({ maxAttempts: 2, initialDelayMs: 0 }) };
    await expect(runCycle(noWait, input())).rejects.toThrow('Connection is closed.');
    expect(events.filter((event) => event.startsWith('abandon'))).toEqual([]);
  });

  it('runCycle should record a listing Redis failed in place, while the lease holds, and say the cycle was listed when it cannot', async () => {
    const { deps, events } = setup(pages(10));
    const listed = deps.cycles.listed.bind(deps.cycles);
    let failures = 1;
    deps.cycles.listed = async (...args) => {
      if (failures-- > 0) throw new Error('Connection is closed.');
      return listed(...args);
    };
    const noWait = { ...deps, listedRetry: retryPolicy({ maxAttempts: 3, initialDelayMs: 0 }) };
    await expect(runCycle(noWait, input())).resolves.toMatchObject({ totalDevices: 10, totalBatches: 1 });
    expect(events.at(-1)).toBe('listed 1/10 per-device');

    // Failing for longer than the lease holds: the error says every batch went out.
    let held = true;
    let tries = 0;
    deps.cycles.listed = async () => {
      tries++;
      held = false;
      throw new Error('Connection is closed.');
    };
    const failed = runCycle(
      noWait,
      input(undefined, null, () => held),
    );
    await expect(failed).rejects.toBeInstanceOf(CycleListedNotRecordedError);
    await expect(failed).rejects.toThrow('Connection is closed.');
    // With the totals the scheduler records at the tenant's next try.
    await expect(failed).rejects.toMatchObject({
      totals: { totalBatches: 1, totalDevices: 10, vulnerabilityMode: 'per-device', note: null },
    });
    expect(tries).toBe(1);
  });
});

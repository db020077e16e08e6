import { MAX_SEND_BYTES } from '@urs/bus';
import type { DeviceBatch, VulnerabilityCorrection } from '@urs/contracts';
import {
  changedDevices,
  correctionBatchCount,
  correctionHeader,
  listedSince,
  notInSnapshot,
  sendCorrections,
  storedCorrections,
} from '../src/corrections';
import { unreadableInExport } from '../src/enrichment';
import { emptySummary } from '../src/summarise';
import { batch } from './handler-support';

async function* slices(...all: [string, string | null][][]): AsyncIterable<[string, string | null][]> {
  for (const slice of all) yield slice;
}

describe('changedDevices', () => {
  it('changedDevices should keep the ids of the changed devices across slices, in order', async () => {
    const changed = Array.from({ length: 2_500 }, (_, i): [string, string | null] => [`d${i}`, '{}']);
    expect(await changedDevices(slices(changed.slice(0, 700), [], changed.slice(700)))).toEqual(
      changed.map(([id]) => id),
    );
  });
});

describe('storedCorrections', () => {
  it("storedCorrections should fail retryably, correcting no device, when the cycle's stored export is gone", async () => {
    const latest = { cycleId: 'c1', collectedAt: '2026-01-01T10:00:00.000Z', cvssThreshold: 7 };
    const corrections = await storedCorrections(
      {
        async *scan() {},
        async *compare() {
          yield [['d1', '{}']];
        },
        // Evicted since its devices were compared.
        read: async () => null,
      },
      batch({ cycleId: 'c2' }),
      latest,
    );
    expect(corrections.changed).toEqual(['d1']);
    await expect(corrections.summaries(['d1'])).rejects.toMatchObject({
      code: 'BULK_EXPORT_GONE',
      canRetry: true,
    });
  });
});

describe('sendCorrections', () => {
  const summary = { ...emptySummary(7), totalCveCount: 2, topCveIds: ['CVE-2024-1'] };

  /** Each correction batch as a message of `bytes` bytes of JSON, its index and corrections kept to check. */
  const messageOf = (bytes: number) => (corrections: VulnerabilityCorrection[], index: number) => ({
    key: 't1',
    json: 'x'.repeat(bytes),
    index,
    corrections,
  });

  it('sendCorrections should send several batches of 1000 devices a send, each send at most MAX_SEND_BYTES, in order', async () => {
    const ids = Array.from({ length: 9_500 }, (_, i) => `d${i}`);
    /** Devices looked up but not sent yet, at most. */
    let unsent = 0;
    let most = 0;
    const sends: { index: number; corrections: VulnerabilityCorrection[] }[][] = [];
    await sendCorrections(
      ids,
      async (some) => {
        unsent += some.length;
        most = Math.max(most, unsent);
        return new Map(some.map((id) => [id, summary]));
      },
      7,
      // A quarter of a send less a little: four batches fill a send.
      messageOf(Math.floor(MAX_SEND_BYTES / 4) - 100),
      async (messages) => {
        for (const message of messages) unsent -= message.corrections.length;
        sends.push(messages);
      },
    );
    expect(sends.map((messages) => messages.map((message) => message.index))).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
      [8, 9],
    ]);
    expect(sends.flat().flatMap((message) => message.corrections.map((item) => item.deviceId))).toEqual(ids);
    expect(sends.flat().map((message) => message.corrections.length)).toEqual([
      ...Array.from({ length: 9 }, () => 1_000),
      500,
    ]);
    // One send's batches, and the one made next, held at once, however many devices changed.
    expect(most).toBe(5_000);
  });

  it('sendCorrections should send a batch larger than MAX_SEND_BYTES alone', async () => {
    const sends: number[][] = [];
    await sendCorrections(
      Array.from({ length: 2_500 }, (_, i) => `d${i}`),
      async (some) => new Map(some.map((id) => [id, summary])),
      7,
      messageOf(MAX_SEND_BYTES),
      async (messages) => void sends.push(messages.map((message) => message.index)),
    );
    expect(sends).toEqual([[0], [1], [2]]);
  });

  it('sendCorrections should give a device the export does not list an empty summary, and one it could not read none', async () => {
    const sent: unknown[] = [];
    await sendCorrections(
      ['held', 'gone', 'unreadable'],
      async () =>
        new Map([
          ['held', summary],
          ['unreadable', null],
        ]),
      7,
      messageOf(100),
      async (messages) => void sent.push(...messages.map((message) => message.corrections)),
    );
    expect(sent).toEqual([
      [
        { deviceId: 'held', vulnerabilities: summary },
        { deviceId: 'gone', vulnerabilities: emptySummary(7) },
        { deviceId: 'unreadable', vulnerabilities: null, fetchError: unreadableInExport() },
      ],
    ]);
  });

  it('sendCorrections should send at least the batches asked, those past the corrections empty, looking none up', async () => {
    const asked: string[][] = [];
    const sends: { index: number; corrections: VulnerabilityCorrection[] }[][] = [];
    await sendCorrections(
      Array.from({ length: 1_500 }, (_, i) => `d${i}`),
      async (some) => {
        asked.push(some);
        return new Map(some.map((id) => [id, summary]));
      },
      7,
      messageOf(100),
      async (messages) => void sends.push(messages),
      4,
    );
    expect(sends.flat().map((message) => [message.index, message.corrections.length])).toEqual([
      [0, 1_000],
      [1, 500],
      [2, 0],
      [3, 0],
    ]);
    expect(asked.map((ids) => ids.length)).toEqual([1_000, 500]);
  });

  it('sendCorrections should send nothing when nothing changed', async () => {
    const send = jest.fn(async () => undefined);
    await sendCorrections([], async () => new Map(), 9, messageOf(100), send);
    expect(send).not.toHaveBeenCalled();
    expect(correctionBatchCount(0)).toBe(0);
  });

  it('correctionBatchCount should count the batches of 1000 devices', () => {
    expect([1, 1_000, 1_001, 4_500].map(correctionBatchCount)).toEqual([1, 1, 2, 5]);
  });
});

describe('listedSince', () => {
  const none = async () => new Map();

  it("listedSince should add each device the cycle's snapshot lists and no change names", () => {
    const snapshot = { generatedTime: '2026-01-01T12:00:00.000Z', collectedAt: '2026-01-01T12:30:00.000Z' };
    const all = listedSince({ changed: ['held'], summaries: none, snapshot }, [
      ['held', '2025-12-31T07:00:00.000Z'],
      ['clear', '2025-12-31T08:00:00.000Z'],
      ['a-day-before', '2025-12-31T12:00:00.000Z'],
      ['less-than-a-day-before', '2025-12-31T12:00:00.001Z'],
      ['since', '2026-01-01T12:00:00.001Z'],
      ['clear', '2025-12-31T08:00:00.000Z'],
    ]);
    // `held` (the export lists it, with its CVE) once; a device first seen less than a day before the snapshot
    // may not be assessed in it, and `since` is not in it either.
    expect(all).toEqual(['held', 'clear', 'a-day-before']);
  });

  it('listedSince should take a snapshot without a time for one 7 hours older than its read', () => {
    const snapshot = { collectedAt: '2026-01-01T19:00:00.000Z' };
    const all = listedSince({ changed: [], summaries: none, snapshot }, [
      ['old', '2025-12-31T11:59:00.000Z'],
      ['recent', '2025-12-31T12:01:00.000Z'],
    ]);
    expect(all).toEqual(['old']);
  });

  it('listedSince should leave the changed devices as they are when no device was sent as not in the snapshot', () => {
    const snapshot = { generatedTime: '2026-01-01T12:00:00.000Z', collectedAt: '2026-01-01T12:30:00.000Z' };
    expect(listedSince({ changed: ['d1'], summaries: none, snapshot }, [])).toEqual(['d1']);
  });
});

describe('notInSnapshot', () => {
  it('notInSnapshot should name the devices sent as not in their snapshot, with their firstSeen', () => {
    const unknown = { code: 'NOT_IN_EXPORT_SNAPSHOT', message: 'first seen after the snapshot' };
    expect(
      notInSnapshot([
        {
          machine: { id: 'd1', firstSeen: '2026-01-01T07:00:00.000Z' },
          vulnerabilities: null,
          fetchError: unknown,
        },
        { machine: { id: 'd2' }, vulnerabilities: emptySummary(9) },
        {
          machine: { id: 'd3', firstSeen: '2026-01-01T07:00:00.000Z' },
          vulnerabilities: null,
          fetchError: { code: 'BULK_EXPORT_TIMEOUT', message: 'not ready' },
        },
      ]),
    ).toEqual([['d1', '2026-01-01T07:00:00.000Z']]);
  });
});

describe('correctionHeader', () => {
  it("correctionHeader should place a correction batch after the last batch, without totals, with the cycle's profile hash", () => {
    const last: DeviceBatch = batch({
      vulnerabilityMode: 'bulk',
      batchIndex: 2,
      totalBatches: 3,
      profileHash: 'p1',
    });
    const header = correctionHeader(last, 4, '2026-01-01T10:00:00.000Z', []);
    expect(header).toMatchObject({
      tenantId: 't1',
      cycleId: 'c1',
      batchIndex: 4,
      lastBatch: false,
      vulnerabilityMode: 'bulk',
      collectedAt: '2026-01-01T10:00:00.000Z',
      profileHash: 'p1',
      corrections: [],
    });
    expect(header.totalBatches).toBeUndefined();
    expect(header.totalDevices).toBeUndefined();
  });
});

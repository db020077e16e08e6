import type { DeviceBatch } from '@urs/contracts';
import { correctionHeader, correctionParts, listedSince, notInSnapshot } from '../src/corrections';
import { emptySummary } from '../src/summarise';
import { batch } from './handler-support';

async function* slices(...all: [string, string | null][][]): AsyncIterable<[string, string | null][]> {
  for (const slice of all) yield slice;
}

describe('correctionParts', () => {
  it('correctionParts should cut the changed summaries into batches of 1000 devices across slices', async () => {
    const changed = Array.from({ length: 2_500 }, (_, i): [string, string | null] => [`d${i}`, null]);
    const parts = await correctionParts(slices(changed.slice(0, 700), changed.slice(700)), 9);
    expect(parts.map((part) => part.length)).toEqual([1_000, 1_000, 500]);
    expect(parts.flat().map((correction) => correction.deviceId)).toEqual(changed.map(([id]) => id));
  });

  it('correctionParts should give a device gone from the export an empty summary at the threshold', async () => {
    const summary = { ...emptySummary(7), totalCveCount: 2, topCveIds: ['CVE-2024-1'] };
    const parts = await correctionParts(
      slices([
        ['d1', JSON.stringify(summary)],
        ['d2', null],
      ]),
      7,
    );
    expect(parts).toEqual([
      [
        { deviceId: 'd1', vulnerabilities: summary },
        { deviceId: 'd2', vulnerabilities: emptySummary(7) },
      ],
    ]);
  });

  it('correctionParts should give no batch when nothing changed', async () => {
    expect(await correctionParts(slices([], []), 9)).toEqual([]);
  });
});

describe('listedSince', () => {
  const summary = { ...emptySummary(9), criticalCveCount: 1, totalCveCount: 1, topCveIds: ['CVE-2026-1'] };

  it("listedSince should add an empty summary for each device the cycle's snapshot lists and no change names", async () => {
    const parts = [[{ deviceId: 'held', vulnerabilities: summary }]];
    const snapshot = { generatedTime: '2026-01-01T12:00:00.000Z', collectedAt: '2026-01-01T12:30:00.000Z' };
    const all = await listedSince(
      { parts, snapshot },
      [
        ['held', '2026-01-01T07:00:00.000Z'],
        ['clear', '2026-01-01T08:00:00.000Z'],
        ['at-generation', '2026-01-01T12:00:00.000Z'],
        ['since', '2026-01-01T12:00:00.001Z'],
      ],
      9,
    );
    // `held` (the export lists it, with its CVE) once; `since` is not in this snapshot either.
    expect(all).toEqual([
      [{ deviceId: 'held', vulnerabilities: summary }],
      [
        { deviceId: 'clear', vulnerabilities: emptySummary(9) },
        { deviceId: 'at-generation', vulnerabilities: emptySummary(9) },
      ],
    ]);
  });

  it('listedSince should take a snapshot without a time for one 7 hours older than its read', async () => {
    const snapshot = { collectedAt: '2026-01-01T19:00:00.000Z' };
    const all = await listedSince(
      { parts: [], snapshot },
      [
        ['old', '2026-01-01T11:59:00.000Z'],
        ['recent', '2026-01-01T12:01:00.000Z'],
      ],
      9,
    );
    expect(all.flat().map((item) => item.deviceId)).toEqual(['old']);
  });

  it('listedSince should leave the corrections as they are when no device was sent as not in the snapshot', async () => {
    const parts = [[{ deviceId: 'd1', vulnerabilities: summary }]];
    const snapshot = { generatedTime: '2026-01-01T12:00:00.000Z', collectedAt: '2026-01-01T12:30:00.000Z' };
    expect(await listedSince({ parts, snapshot }, [], 9)).toEqual(parts);
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
  it('correctionHeader should place a correction batch after the last batch, without totals', () => {
    const last: DeviceBatch = batch({ vulnerabilityMode: 'bulk', batchIndex: 2, totalBatches: 3 });
    const header = correctionHeader(last, 4, '2026-01-01T10:00:00.000Z', []);
    expect(header).toMatchObject({
      tenantId: 't1',
      cycleId: 'c1',
      batchIndex: 4,
      lastBatch: false,
      vulnerabilityMode: 'bulk',
      collectedAt: '2026-01-01T10:00:00.000Z',
      corrections: [],
    });
    expect(header.totalBatches).toBeUndefined();
    expect(header.totalDevices).toBeUndefined();
  });
});

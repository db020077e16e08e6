import type { DeviceBatch } from '@urs/contracts';
import { correctionHeader, correctionParts } from '../src/corrections';
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

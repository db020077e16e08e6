import { ScoreColumn } from '../src/score-column';

describe('ScoreColumn', () => {
  it('should keep CVSS scores of one decimal, and none (-1), in a byte each and give them back exactly', () => {
    const column = ScoreColumn.withRoom(4);
    const scores = Array.from({ length: 101 }, (_, i) => i / 10).concat(-1);
    column.grow(scores.length);
    scores.forEach((score, at) => column.set(at, score));
    expect(column.compact).toBe(true);
    expect(scores.map((_, at) => column.get(at))).toEqual(scores);
    expect(column.values(scores.length)).toBeInstanceOf(Int8Array);
  });

  it.each([7.25, 9.99, 12.8, -12.9, 100, -0, Number.NaN, Number.POSITIVE_INFINITY])(
    'should hold every score as given from the first that is not a byte of tenths (%p)',
    (odd) => {
      const column = ScoreColumn.withRoom(2);
      column.set(0, 9.8);
      column.set(1, -1);
      column.grow(3);
      column.set(2, odd);
      expect(column.compact).toBe(false);
      expect([column.get(0), column.get(1), column.get(2)]).toEqual([9.8, -1, odd]);
      column.grow(5);
      column.set(3, 4.4);
      expect([column.get(0), column.get(2), column.get(3)]).toEqual([9.8, odd, 4.4]);
      expect(column.values(4)).toBeInstanceOf(Float64Array);
    },
  );

  it('should give the same scores once taken over from its values', () => {
    const compact = ScoreColumn.withRoom(3);
    [5.5, -1, 10].forEach((score, at) => compact.set(at, score));
    const taken = ScoreColumn.of(compact.values(2));
    expect([taken.length, taken.get(0), taken.get(1)]).toEqual([2, 5.5, -1]);
    const wide = ScoreColumn.withRoom(2);
    [5.55, 3].forEach((score, at) => wide.set(at, score));
    const takenWide = ScoreColumn.of(wide.values(2));
    expect([takenWide.compact, takenWide.get(0), takenWide.get(1)]).toEqual([false, 5.55, 3]);
  });
});

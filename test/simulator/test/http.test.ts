import { jsonArrayParts } from '../src/http';

describe('jsonArrayParts', () => {
  const items = (n: number): string[] => Array.from({ length: n }, (_, i) => JSON.stringify({ i }));

  test.each([0, 1, 3, 4, 9])(
    'jsonArrayParts of %i items should join into the same JSON as one string',
    (n) => {
      const all = items(n);
      const text = Buffer.concat([
        ...jsonArrayParts('{"value":[', n, (start, end) => all.slice(start, end), '],"more":true}', 3),
      ]).toString('utf8');
      expect(text).toBe(`{"value":[${all.join(',')}],"more":true}`);
      expect(JSON.parse(text)).toEqual({ value: all.map((_, i) => ({ i })), more: true });
    },
  );

  test('jsonArrayParts should ask for each part only when it is written, perPart items at a time', () => {
    const asked: [number, number][] = [];
    const parts = jsonArrayParts(
      '[',
      7,
      (start, end) => {
        asked.push([start, end]);
        return items(7).slice(start, end);
      },
      ']',
      3,
    );
    expect(parts.next().value?.toString()).toBe('[');
    expect(asked).toEqual([]);
    parts.next();
    expect(asked).toEqual([[0, 3]]);
    const rest = [...parts].map((part) => part.toString());
    expect(asked).toEqual([
      [0, 3],
      [3, 6],
      [6, 7],
    ]);
    expect(rest).toEqual([`,${items(7).slice(3, 6).join(',')}`, `,${items(7)[6]}`, ']']);
  });
});

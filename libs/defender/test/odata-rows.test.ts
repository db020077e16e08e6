import { MalformedODataError, ODataRowScanner } from '../src/odata-rows';

/** Scans `text` cut into chunks of `size` bytes; the rows and the rest of the answer. */
function scan(
  text: string,
  size: number,
): { rows: unknown[]; members: Record<string, unknown>; hasValue: boolean } {
  const rows: unknown[] = [];
  const scanner = new ODataRowScanner((row) => rows.push(row));
  const bytes = Buffer.from(text, 'utf8');
  for (let at = 0; at < bytes.length; at += size) scanner.push(bytes.subarray(at, at + size));
  return { rows, ...scanner.end() };
}

const CHUNK_SIZES = [1, 2, 3, 7, 64, 1 << 20];

describe('ODataRowScanner', () => {
  const answer = {
    '@odata.context': 'https://api.example/$metadata#Machines',
    value: [
      { id: 'a', tags: ['x', 'y'], nested: { deep: [1, { k: '}]' }] } },
      { id: 'b"c', text: 'quote \\" backslash \\\\ brace { bracket [ comma ,', name: 'Zoë – 東京 😀' },
      { id: 'd', empty: {}, none: [], n: -1.5e3, t: true, f: false, z: null },
      'a string row',
      42,
    ],
    '@odata.nextLink': 'https://api.example/api/machines?$skiptoken=abc%2C',
    count: { total: 5 },
  };

  it.each(CHUNK_SIZES)(
    'should give every row and member exactly as JSON.parse does, in chunks of %i bytes',
    (size) => {
      const { rows, members, hasValue } = scan(JSON.stringify(answer, null, size === 3 ? 2 : 0), size);
      expect(rows).toEqual(answer.value);
      expect(members).toEqual({
        '@odata.context': answer['@odata.context'],
        '@odata.nextLink': answer['@odata.nextLink'],
        count: { total: 5 },
      });
      expect(hasValue).toBe(true);
    },
  );

  it('should read an empty value array and members before and after it', () => {
    expect(scan(' { "a" : 1 , "value" : [ ] , "b" : [2] } \n', 1)).toEqual({
      rows: [],
      members: { a: 1, b: [2] },
      hasValue: true,
    });
  });

  it('should only take the top-level "value" as rows, not a nested one or another array', () => {
    const text = JSON.stringify({ other: { value: [1, 2] }, values: [3], value: [4] });
    expect(scan(text, 5)).toEqual({
      rows: [4],
      members: { other: { value: [1, 2] }, values: [3] },
      hasValue: true,
    });
  });

  it('should tell an answer without a value array', () => {
    expect(scan('{"error": {"code": "x"}}', 4)).toEqual({
      rows: [],
      members: { error: { code: 'x' } },
      hasValue: false,
    });
  });

  it.each([
    ['a truncated row', '{"value": [{"id": "a"}, {"id": '],
    ['a truncated string', '{"value": ["abc'],
    ['no closing brace', '{"value": []'],
    ['an array answer', '[{"id": "a"}]'],
    ['text after the answer', '{"value": []} x'],
    ['an invalid row', '{"value": [{"id": a}]}'],
    ['an empty entry', '{"value": [1,,2]}'],
    ['a trailing comma in value', '{"value": [1,]}'],
    ['an invalid member', '{"a": nope, "value": []}'],
    ['an empty member', '{"a": 1,, "value": []}'],
    ['junk after the value array', '{"value": [1] 2}'],
    ['unbalanced brackets', '{"value": [1}]}'],
  ])('should throw MalformedODataError for %s', (_name, text) => {
    for (const size of [1, 4, 100]) expect(() => scan(text, size)).toThrow(MalformedODataError);
  });

  it('should hand each row over as soon as it is complete, before the answer ends', () => {
    const rows: unknown[] = [];
    const scanner = new ODataRowScanner((row) => rows.push(row));
    scanner.push(Buffer.from('{"value": [{"id": 1}, {"id"'));
    expect(rows).toEqual([{ id: 1 }]);
    scanner.push(Buffer.from(': 2}]}'));
    expect(rows).toEqual([{ id: 1 }, { id: 2 }]);
  });
});

import { batchItemJson, deviceBatchMessage, jsonBatchBytes, jsonWithHead, parseJsonBytes } from '@urs/bus';

describe('jsonBatchBytes', () => {
  it('should give the JSON of the header with the items as its last member, from text or bytes', () => {
    const items = [{ id: 'a', n: 1 }, { id: 'Zürich 💻', nested: { list: [1, 2] } }, { id: 'c"\\' }];
    const header = { schemaVersion: 1, tenantId: 't-1', cycleId: 'c-1' };
    const text = items.map((item) => JSON.stringify(item));
    // Each item on a line of its own.
    const expected = `${JSON.stringify(header).slice(0, -1)},"devices":[\n${text.join(',\n')}\n]}`;
    expect(jsonBatchBytes(header, 'devices', text).toString('utf8')).toBe(expected);
    expect(
      jsonBatchBytes(
        header,
        'devices',
        text.map((json) => Buffer.from(json)),
      ).toString('utf8'),
    ).toBe(expected);
    expect(JSON.parse(expected)).toEqual({ ...header, devices: items });
  });

  it('should handle an empty header and no items', () => {
    expect(jsonBatchBytes({}, 'devices', []).toString('utf8')).toBe('{"devices":[\n]}');
    expect(JSON.parse(jsonBatchBytes({}, 'devices', []).toString('utf8'))).toEqual({ devices: [] });
    expect(jsonBatchBytes({ a: 1 }, 'items', ['2']).toString('utf8')).toBe('{"a":1,"items":[\n2\n]}');
  });
});

describe('deviceBatchMessage', () => {
  it('should give the batch as value and its JSON as bytes, serialising the devices unless given', () => {
    const header = { tenantId: 't-1', batchIndex: 2 };
    const devices = [{ id: 'a' }, { id: 'b', n: 2 }];
    const made = deviceBatchMessage('t-1', header, devices);
    expect(made.key).toBe('t-1');
    expect(made.value).toEqual({ ...header, devices });
    expect(JSON.parse(made.json.toString('utf8'))).toEqual(made.value);
    const given = devices.map((device) => Buffer.from(JSON.stringify(device)));
    expect(deviceBatchMessage('t-1', header, devices, given).json).toEqual(made.json);
  });
});

/** An item with text that needs escaping, commas, newlines and brackets in its strings, and nesting. */
const device = (n: number) => ({
  id: `device-${n}`,
  name: `Zürich 💻 "${n}"\\`,
  tags: ['a\nb', 'c,d', ']}'],
  nested: { list: [n, n + 1], empty: {} },
});

describe('parseJsonBytes', () => {
  const header = { schemaVersion: 1, tenantId: 't-1', batchIndex: 3 };
  // Past the size from which a batch is read item by item.
  const devices = Array.from({ length: 800 }, (_, n) => device(n));
  const batch = jsonBatchBytes(
    header,
    'devices',
    devices.map((item) => JSON.stringify(item)),
  );

  /** What JSON.parse of the whole text gives: the value, or the error's class and message. */
  function whole(bytes: Buffer): unknown {
    try {
      return JSON.parse(bytes.toString('utf8'));
    } catch (error) {
      return { threw: (error as Error).constructor.name, message: (error as Error).message };
    }
  }
  function parsed(bytes: Buffer): unknown {
    try {
      return parseJsonBytes(bytes);
    } catch (error) {
      return { threw: (error as Error).constructor.name, message: (error as Error).message };
    }
  }

  it('should read a large batch laid out by jsonBatchBytes as JSON.parse reads it', () => {
    expect(batch.length).toBeGreaterThan(64 * 1024);
    expect(parseJsonBytes(batch)).toEqual({ ...header, devices });
    expect(parsed(batch)).toEqual(whole(batch));
  });

  it('should read small values, other layouts and empty batches as JSON.parse does', () => {
    const cases = [
      Buffer.from('{"a":1}'),
      Buffer.from('[1,2,3]'),
      Buffer.from(JSON.stringify({ ...header, devices })),
      jsonBatchBytes(header, 'devices', []),
      Buffer.concat([jsonBatchBytes({ big: 'x'.repeat(70_000) }, 'devices', [])]),
      jsonBatchBytes(
        header,
        'items',
        devices.map((item) => JSON.stringify(item)),
      ),
    ];
    for (const bytes of cases) expect(parsed(bytes)).toEqual(whole(bytes));
  });

  it('should keep the last of repeated devices members, as JSON.parse does', () => {
    const text = batch.toString('utf8').replace('{"schemaVersion"', '{"devices":[1],"schemaVersion"');
    const bytes = Buffer.from(text);
    expect((parseJsonBytes(bytes) as { devices: unknown[] }).devices).toHaveLength(800);
    expect(parsed(bytes)).toEqual(whole(bytes));
  });

  it('should fail exactly as JSON.parse fails on bytes that are not JSON', () => {
    const text = batch.toString('utf8');
    const broken = [
      text.replace('\n]}', ',\n]}'), // a comma after the last item
      text.replace('},\n{', '}\n{'), // a comma missing between two items
      text.replace('},\n{', '},,\n{'), // two commas
      text.slice(0, -1), // cut short
      `${text} x`, // something after the end
      text.replace('"device-5"', '"device-5'), // a string not closed
      text.replace(/\n\]\}$/, '\n]'), // the object not closed
    ];
    for (const variant of broken) {
      const bytes = Buffer.from(variant);
      expect(whole(bytes)).toHaveProperty('threw', 'SyntaxError');
      expect(parsed(bytes)).toEqual(whole(bytes));
    }
  });

  it('should read a batch whose items are not one per line (two on a line, values of any kind) as JSON.parse does', () => {
    const text = batch.toString('utf8');
    const variants = [
      text.replace('},\n{"id":"device-7"', '},{"id":"device-7"'),
      text.replace('\n{"id":"device-9"', '\n"text",{"id":"device-9"'),
      text.replace('},\n{"id":"device-2"', '}  ,\n  {"id":"device-2"'),
      text.replace(',\n{"id":"device-3"', ',\n\n{"id":"device-3"'), // an empty line
    ];
    for (const variant of variants) {
      const bytes = Buffer.from(variant);
      expect(parsed(bytes)).toEqual(whole(bytes));
      expect(whole(bytes)).not.toHaveProperty('threw');
    }
  });
});

describe('batchItemJson and jsonWithHead', () => {
  const devices = Array.from({ length: 800 }, (_, n) => device(n));
  const large = () =>
    parseJsonBytes(
      jsonBatchBytes(
        { tenantId: 't-1' },
        'devices',
        devices.map((item) => JSON.stringify(item)),
      ),
    ) as { devices: unknown[] };

  it("should give the bytes of each item of a batch read by lines, and a record's JSON made of them exactly as JSON.stringify makes it", () => {
    const batch = large();
    const lines = batchItemJson(batch, batch.devices);
    expect(lines).toHaveLength(devices.length);
    const head = {
      schemaVersion: 1,
      tenantId: 't-1',
      cycleId: 'c-1',
      computedAt: '2026-12-04T10:00:00.000Z',
    };
    batch.devices.forEach((item, index) => {
      const line = lines?.[index] as Buffer;
      expect(JSON.parse(line.toString('utf8'))).toEqual(item);
      expect(jsonWithHead(JSON.stringify(head), line)?.toString('utf8')).toBe(
        JSON.stringify({ ...head, ...(item as object) }),
      );
    });
  });

  it('should give no bytes for a batch parsed whole, or for items that are not the array it was read into', () => {
    const small = parseJsonBytes(
      jsonBatchBytes({ tenantId: 't-1' }, 'devices', [JSON.stringify(device(1))]),
    ) as { devices: unknown[] };
    expect(batchItemJson(small, small.devices)).toBeUndefined();
    const batch = large();
    expect(batchItemJson(batch, batch.devices.slice())).toBeUndefined();
    expect(
      batchItemJson(
        batch,
        batch.devices.filter((_, index) => index % 2 === 0),
      ),
    ).toBeUndefined();
  });

  it('should merge an empty head or an empty object, and refuse bytes that are not an object', () => {
    const object = Buffer.from('{"a":1}');
    expect(jsonWithHead('{}', object)?.toString('utf8')).toBe('{"a":1}');
    expect(jsonWithHead('{"h":2}', Buffer.from('{}'))?.toString('utf8')).toBe('{"h":2}');
    expect(jsonWithHead('{"h":2}', object)?.toString('utf8')).toBe('{"h":2,"a":1}');
    expect(jsonWithHead('{"h":2}', Buffer.from(' {"a":1}'))).toBeUndefined();
    expect(jsonWithHead('{"h":2}', Buffer.from('[1]'))).toBeUndefined();
  });
});

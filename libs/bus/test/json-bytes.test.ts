import { deviceBatchMessage, jsonBatchBytes } from '@urs/bus';

describe('jsonBatchBytes', () => {
  it('should give the JSON of the header with the items as its last member, from text or bytes', () => {
    const items = [{ id: 'a', n: 1 }, { id: 'Zürich 💻', nested: { list: [1, 2] } }, { id: 'c"\\' }];
    const header = { schemaVersion: 1, tenantId: 't-1', cycleId: 'c-1' };
    const text = items.map((item) => JSON.stringify(item));
    const expected = JSON.stringify({ ...header, devices: items });
    expect(jsonBatchBytes(header, 'devices', text).toString('utf8')).toBe(expected);
    expect(
      jsonBatchBytes(
        header,
        'devices',
        text.map((json) => Buffer.from(json)),
      ).toString('utf8'),
    ).toBe(expected);
  });

  it('should handle an empty header and no items', () => {
    expect(JSON.parse(jsonBatchBytes({}, 'devices', []).toString('utf8'))).toEqual({ devices: [] });
    expect(jsonBatchBytes({ a: 1 }, 'items', ['2']).toString('utf8')).toBe('{"a":1,"items":[2]}');
  });
});

describe('deviceBatchMessage', () => {
  it('should give the batch as value and its JSON as bytes, serialising the devices unless given', () => {
    const header = { tenantId: 't-1', batchIndex: 2 };
    const devices = [{ id: 'a' }, { id: 'b', n: 2 }];
    const made = deviceBatchMessage('t-1', header, devices);
    expect(made.key).toBe('t-1');
    expect(made.value).toEqual({ ...header, devices });
    expect(made.json.toString('utf8')).toBe(JSON.stringify(made.value));
    const given = devices.map((device) => Buffer.from(JSON.stringify(device)));
    expect(deviceBatchMessage('t-1', header, devices, given).json).toEqual(made.json);
  });
});

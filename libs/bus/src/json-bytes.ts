const COMMA = Buffer.from(',');
const CLOSE = Buffer.from(']}');

/**
 * The UTF-8 JSON of `{...header, [member]: [items…]}` (`member` last), built from each item's own JSON
 * as bytes: `JSON.parse` of it equals the object. A batch message is ~0.5–1 MB; made as one string
 * (`JSON.stringify`, or a join of the items' JSON) it is a large V8 object, allocated on fresh pages
 * each time and encoded to bytes again by the producer, which cost twice the time of serialising its
 * items. Small strings turned into bytes and copied into one buffer are not.
 */
export function jsonBatchBytes(
  header: Record<string, unknown>,
  member: string,
  itemJson: readonly (string | Buffer)[],
): Buffer {
  const head = JSON.stringify(header);
  const open = Buffer.from(`${head.length > 2 ? `${head.slice(0, -1)},` : '{'}${JSON.stringify(member)}:[`);
  const parts: Buffer[] = [open];
  for (let index = 0; index < itemJson.length; index++) {
    if (index > 0) parts.push(COMMA);
    const item = itemJson[index] as string | Buffer;
    parts.push(typeof item === 'string' ? Buffer.from(item) : item);
  }
  parts.push(CLOSE);
  return Buffer.concat(parts);
}

/**
 * A batch message (`{...header, devices}`) with its JSON built by `jsonBatchBytes` from each device's
 * JSON: `deviceJson` when the caller serialised the devices already (in their order), else made here.
 */
export function deviceBatchMessage<H extends Record<string, unknown>, D>(
  key: string,
  header: H,
  devices: D[],
  deviceJson: readonly (string | Buffer)[] = devices.map((device) => JSON.stringify(device)),
): { key: string; value: H & { devices: D[] }; json: Buffer } {
  return { key, value: { ...header, devices }, json: jsonBatchBytes(header, 'devices', deviceJson) };
}

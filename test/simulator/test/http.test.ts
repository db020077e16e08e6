import { createServer, get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { jsonArrayParts, sendParts } from '../src/http';

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

describe('sendParts', () => {
  /**
   * A server answering with `parts`, and how the answer came to the client: whole, or cut off (the
   * connection closed before its end, with or without the status line); and what sendParts rejected with.
   */
  async function answer(
    parts: () => Iterable<Buffer>,
    gzip: boolean,
  ): Promise<{ outcome: 'whole' | 'cut off'; failed: unknown }> {
    let failed: unknown;
    const server: Server = createServer((_req, res) => {
      sendParts(res, 200, parts(), {}, gzip).catch((err: unknown) => (failed = err));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const outcome = await new Promise<'whole' | 'cut off'>((resolve, reject) => {
        const req = get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
          res.resume();
          res.on('close', () => resolve(res.statusCode === 200 && res.complete ? 'whole' : 'cut off'));
          res.on('error', () => undefined);
        });
        // An answer left open: the client gives up (rejects) after 5 s without a byte.
        const timeout = new Error('the answer neither ended nor was cut off');
        req.setTimeout(5_000, () => req.destroy(timeout));
        req.on('error', (err) => (err === timeout ? reject(err) : resolve('cut off')));
      });
      return { outcome, failed };
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  }

  test.each([false, true])(
    'an answer whose parts fail midway should be cut off, not left open (gzip %s)',
    async (gzip) => {
      function* failing(): Generator<Buffer> {
        yield Buffer.from('{"value":[');
        throw new TypeError('a part could not be rendered');
      }
      const { outcome, failed } = await answer(failing, gzip);
      expect(outcome).toBe('cut off');
      expect(failed).toBeInstanceOf(TypeError);
    },
  );

  test('an answer whose parts all render should end whole', async () => {
    const parts = (): Buffer[] => [Buffer.from('{"value":['), Buffer.from(']}')];
    for (const gzip of [false, true])
      expect(await answer(parts, gzip)).toEqual({ outcome: 'whole', failed: undefined });
  });
});

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ephemeralPortStart, freePort, portSlice } from '../support/ports';

// The tests' ports: below the kernel's ephemeral range, a slice per jest worker, so that suites running side by
// side never take each other's ports, nor a broker's port while it is stopped to be restarted.

function listen(port: number): Promise<Server> {
  const server = createServer();
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

describe('test ports', () => {
  it('ephemeralPortStart should read the kernel range, and fall back to 32768 without it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'urs-ports-'));
    try {
      writeFileSync(join(dir, 'range'), '40000\t60999\n');
      expect(ephemeralPortStart(join(dir, 'range'))).toBe(40_000);
      expect(ephemeralPortStart(join(dir, 'missing'))).toBe(32_768);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('portSlice should give each worker its own thousand ports below the ephemeral range', () => {
    const slices = [1, 2, 3].map((worker) => portSlice(worker, 32_768));
    expect(slices).toEqual([
      { from: 10_000, to: 10_999 },
      { from: 11_000, to: 11_999 },
      { from: 12_000, to: 12_999 },
    ]);
    // More workers than slices wrap around rather than reach into the ephemeral range.
    expect(portSlice(23, 32_768)).toEqual({ from: 10_000, to: 10_999 });
  });

  it('freePort should hand out this worker’s ports in turn, each below the ephemeral range, skipping one in use', async () => {
    const slice = portSlice(Number(process.env['JEST_WORKER_ID'] ?? '1'));
    const first = await freePort();
    const second = await freePort();
    for (const port of [first, second]) {
      expect(port).toBeGreaterThanOrEqual(slice.from);
      expect(port).toBeLessThanOrEqual(slice.to);
      expect(port).toBeLessThan(ephemeralPortStart());
    }
    const after = (port: number) => (port === slice.to ? slice.from : port + 1);
    expect(second).toBe(after(first));
    // The next in turn is in use: it is skipped.
    const busy = await listen(after(second));
    try {
      expect(await freePort()).toBe(after(after(second)));
    } finally {
      await new Promise((resolve) => busy.close(resolve));
    }
  });
});

import { createServer, get, type Server, type ServerResponse } from 'node:http';
import { listenHttp } from '@urs/telemetry';

/** A server whose every request waits until the test answers it. */
function slowServer(): { server: Server; pending: ServerResponse[] } {
  const pending: ServerResponse[] = [];
  const server = createServer((_request, response) => {
    pending.push(response);
  });
  return { server, pending };
}

/** Sends a GET and settles with the status, or with the error code when the connection is cut. */
function request(port: number, host = '127.0.0.1'): Promise<number | string> {
  return new Promise((resolve) => {
    get({ host, port, path: '/' }, (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode ?? 0));
    }).on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
}

async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe('listenHttp', () => {
  it('listenHttp should let a request in flight finish when closing idle connections', async () => {
    const { server, pending } = slowServer();
    const listening = await listenHttp(server, { port: 0, host: '127.0.0.1', closeConnections: 'idle' });
    expect(listening.port).toBeGreaterThan(0);
    const answer = request(listening.port);
    await until(() => pending.length === 1);
    const closed = listening.close();
    expect(listening.close()).toBe(closed);
    pending[0]?.writeHead(200).end();
    expect(await answer).toBe(200);
    await closed;
    expect(server.listening).toBe(false);
  });

  it('listenHttp should cut a request in flight when closing all connections', async () => {
    const { server, pending } = slowServer();
    const listening = await listenHttp(server, { port: 0, host: '127.0.0.1', closeConnections: 'all' });
    const answer = request(listening.port);
    await until(() => pending.length === 1);
    await listening.close();
    expect(await answer).toBe('ECONNRESET');
    expect(server.listening).toBe(false);
  });

  it('listenHttp should answer on IPv4 and IPv6 loopback alike when given no host, and on the given host alone otherwise', async () => {
    const answering = createServer((_request, response) => response.writeHead(204).end());
    const everywhere = await listenHttp(answering, { port: 0, closeConnections: 'all' });
    try {
      expect(await request(everywhere.port, '127.0.0.1')).toBe(204);
      expect(await request(everywhere.port, '::1')).toBe(204);
    } finally {
      await everywhere.close();
    }
    const fourOnly = createServer((_request, response) => response.writeHead(204).end());
    const onlyV4 = await listenHttp(fourOnly, { port: 0, host: '127.0.0.1', closeConnections: 'all' });
    try {
      expect(await request(onlyV4.port, '127.0.0.1')).toBe(204);
      expect(await request(onlyV4.port, '::1')).toBe('ECONNREFUSED');
    } finally {
      await onlyV4.close();
    }
  });

  it('listenHttp should reject when the port is taken', async () => {
    const first = await listenHttp(createServer(), { port: 0, host: '127.0.0.1', closeConnections: 'all' });
    try {
      await expect(
        listenHttp(createServer(), { port: first.port, host: '127.0.0.1', closeConnections: 'all' }),
      ).rejects.toThrow(/EADDRINUSE/);
    } finally {
      await first.close();
    }
  });
});

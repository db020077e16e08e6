import { createServer } from 'node:net';

/**
 * A TCP port of 127.0.0.1 free right now: listened on and closed again, so nothing listens on it until a test
 * starts something there (a Redis or a broker of its own, a service's HTTP port), or names it as a Kafka or
 * Redis that does not answer.
 */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

import { BusError, type Publisher } from '@urs/bus';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { startApiServer, type ApiServer } from '../../src/http/server';
import { tenantRoutes } from '../../src/http/tenants';
import { memoryTenantStore, registrationBody, testRegistry, testSealer } from '../fakes';

const TOKEN = 'test-token-0123456789abcdef';

/** What the service's publisher rejects a send with once its tries are spent (PUBLISHER_RETRY_MS). */
const kafkaFaults: Array<[string, () => Error]> = [
  [
    'the broker away (KafkaJS retries exceeded)',
    () =>
      Object.assign(new Error('Connection error: connect ECONNREFUSED 127.0.0.1:9092'), {
        name: 'KafkaJSNumberOfRetriesExceeded',
        retriable: false,
        retryCount: 4,
      }),
  ],
  [
    'urs.tenants deleted (TOPIC_MISSING)',
    () =>
      new BusError('TOPIC_MISSING', 'topic urs.tenants does not exist on the broker: recreate it', {
        canRetry: true,
        infrastructure: true,
        details: { topic: 'urs.tenants' },
      }),
  ],
];

/** A publisher whose every send rejects with `fault()`. */
function failingPublisher(fault: () => Error): Publisher {
  return {
    send: async () => Promise.reject(fault()),
    sendRaw: async () => Promise.reject(fault()),
    close: async () => undefined,
  };
}

describe('the registrar API with its publisher failing', () => {
  let server: ApiServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it.each(kafkaFaults)(
    'a write should be answered 503 UNAVAILABLE with Retry-After, and nothing stored, when %s',
    async (_fault, fault) => {
      const tenants = memoryTenantStore();
      const sealer = testSealer();
      const lines: LogLine[] = [];
      const registry = testRegistry({
        tenants,
        publisher: failingPublisher(fault),
        sealer,
        logger: capturingLogger(lines),
      });
      const routes = tenantRoutes({
        registry,
        tenants,
        sealer,
        ensureRebuilt: async () => undefined,
        accessTestTimeoutMs: 5_000,
        checkAccess: async () => {
          throw new Error('not called');
        },
      });
      server = await startApiServer({
        port: 0,
        host: '127.0.0.1',
        routes,
        tokens: [TOKEN],
        maxBodyBytes: 64 * 1024,
        logger: capturingLogger(lines),
      });
      const answer = await fetch(`http://127.0.0.1:${server.port}/v1/tenants/acme/defender`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify(registrationBody()),
      });
      expect(answer.status).toBe(503);
      expect(answer.headers.get('retry-after')).toBe('5');
      expect(await answer.json()).toEqual({ error: { code: 'UNAVAILABLE', message: expect.any(String) } });
      expect(await tenants.get('acme')).toBeNull();
      // The operator's line says what failed (a topic deleted is named), never the secret.
      const failed = lines.find((line) => line.message === 'request failed');
      expect(failed?.['reason']).toBe(fault().message);
      expect(JSON.stringify(lines)).not.toContain(String(registrationBody()['clientSecret']));
    },
  );
});

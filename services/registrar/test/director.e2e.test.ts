import { randomBytes, randomUUID } from 'node:crypto';
import type { Producer } from 'kafkajs';
import type { DeadLetter, TenantRecord } from '@urs/contracts';
import { createRegistrarStateStore, createTenantStore } from '@urs/store';
import { deleteKeysMatching, waitFor } from '@urs/testkit';
// The process harness is shared with the poller's end-to-end suite.
import { api, type ServiceProcess } from '../../poller/test/support/services';
import {
  buildServices,
  collectTopics,
  createTestStack,
  portFrom,
  type ReceivedMessage,
  type TestStack,
} from '../../poller/test/support/stack';

// The registrar as its own process, Director's pushes produced onto its registration topic.
describe('registrar: Director pushes', () => {
  let stack: TestStack;
  let registrar: ServiceProcess;
  let producer: Producer;
  let topics: { messages: ReceivedMessage[]; close(): Promise<void> };
  const secrets = new Map<string, string>();
  const answers: string[] = [];

  const tenant = (i: number, overrides: Record<string, unknown> = {}) => {
    const tenantId = `bulk-${i}`;
    if (!secrets.has(tenantId)) secrets.set(tenantId, `S3cr3t~${randomBytes(10).toString('hex')}`);
    return {
      tenantId,
      defender: {
        enabled: true,
        azureTenantId: randomUUID(),
        clientId: randomUUID(),
        clientSecret: secrets.get(tenantId),
        pollIntervalMinutes: 60,
        cloud: 'commercial',
        region: i % 2 === 0 ? 'eu' : null,
        riskProfile: i % 3 === 0 ? { weights: { criticalRisk: 60, operational: 40 } } : null,
        ...overrides,
      },
    };
  };
  const push = async (generation: number, mode: 'full' | 'delta', tenants: unknown[]) => {
    await producer.send({
      topic: stack.topic('urs.registration'),
      messages: [{ key: 'director', value: JSON.stringify({ schemaVersion: 1, generation, mode, tenants }) }],
    });
  };
  const store = () => createTenantStore(stack.redis.client, stack.redis.prefix);
  const records = (): TenantRecord[] =>
    topics.messages
      .filter((m) => m.topic === stack.topic('urs.tenants') && m.text !== null)
      .map((m) => JSON.parse(m.text as string) as TenantRecord);
  const deadLetters = (): DeadLetter[] =>
    topics.messages
      .filter((m) => m.topic === stack.topic('urs.dlq'))
      .map((m) => JSON.parse(m.text as string) as DeadLetter);

  // Generation 5: 50 tenants, one of them invalid in two ways.
  const first = Array.from({ length: 50 }, (_, i) =>
    i === 17 ? tenant(i, { azureTenantId: 'not-a-guid', pollIntervalMinutes: 5 }) : tenant(i),
  );

  beforeAll(async () => {
    buildServices();
    stack = await createTestStack({ intervalUnitMs: 60_000, leaseMs: 30_000 });
    registrar = await stack.start('registrar');
    producer = stack.kafka.producer();
    await producer.connect();
    topics = await collectTopics(stack.kafka, [stack.topic('urs.tenants'), stack.topic('urs.dlq')]);
  });

  afterAll(async () => {
    await producer?.disconnect();
    await topics?.close();
    await stack?.close();
  });

  it('a full push with one invalid tenant should apply the other 49 and report that one', async () => {
    await push(5, 'full', first);
    await waitFor(async () => (await store().ids()).length === 49, { timeoutMs: 20_000 });
    await waitFor(() => new Set(records().map((r) => r.tenantId)).size === 49 && deadLetters().length === 1);
    expect(await store().get('bulk-17')).toBeNull();
    const sealed = (await store().get('bulk-3')) as TenantRecord;
    expect(sealed).toMatchObject({ source: 'director', generation: 5, enabled: true });
    expect(sealed.defender.clientSecret).toMatchObject({ alg: 'A256GCM', keyId: 'k1' });

    const letter = deadLetters()[0] as DeadLetter;
    expect(letter).toMatchObject({
      service: 'registrar',
      key: 'bulk-17',
      sourceTopic: stack.topic('urs.registration'),
    });
    expect(letter.error.code).toBe('REGISTRATION_INVALID');
    expect(letter.error.message).toBe(
      'registration refused: tenants[17].defender.azureTenantId must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx); ' +
        'tenants[17].defender.pollIntervalMinutes must be a whole number from 10 to 1440',
    );
    expect(letter.payload).toContain('[redacted]');
    expect(JSON.parse(letter.payload as string).tenantId).toBe('bulk-17');

    const status = await store().getStatus('bulk-17');
    expect(status.state).toBe('registration-rejected');
    expect(status.registrationError?.message).toMatch(/defender\.azureTenantId/);
    const baseUrl = `http://127.0.0.1:${portFrom(registrar.lines, 'REST listening', 'httpPort')}`;
    const get = await api(baseUrl, stack.apiToken, 'GET', '/v1/tenants/bulk-17/defender');
    answers.push(get.text);
    expect(get.status).toBe(404);
    expect(get.body.error.code).toBe('TENANT_NOT_REGISTERED');
    expect(get.body.error.message).toMatch(/pollIntervalMinutes/);
  });

  it('a full push without 5 tenants should disable those 5 and leave the unchanged ones alone', async () => {
    const before = records().length;
    const second = first.slice(5).map((t, index) => (index + 5 === 17 ? tenant(17) : t));
    await push(6, 'full', second);
    await waitFor(async () => (await store().get('bulk-4'))?.enabled === false, { timeoutMs: 20_000 });
    await waitFor(async () => (await store().get('bulk-17')) !== null);
    for (let i = 0; i < 5; i++) {
      const record = (await store().get(`bulk-${i}`)) as TenantRecord;
      expect(record).toMatchObject({
        enabled: false,
        disabledReason: 'missing from Director full push 6',
        generation: 6,
      });
      expect((await store().getStatus(`bulk-${i}`)).state).toBe('disabled');
    }
    expect(await store().ids()).toHaveLength(50);
    // 5 disabled + bulk-17 accepted; the 44 unchanged tenants got no new revision.
    await waitFor(() => records().length === before + 6);
    expect((await store().get('bulk-30'))?.generation).toBe(5);
    expect((await store().getStatus('bulk-17')).state).toBe('active');
  });

  it('an older generation should be ignored and logged', async () => {
    const revision = (await store().get('bulk-10'))?.revision;
    await push(4, 'delta', [tenant(10, { pollIntervalMinutes: 30 })]);
    await registrar.waitForLine(
      (line) => line.includes('older Director generation ignored') && line.includes('"generation":4'),
    );
    expect((await store().get('bulk-10'))?.revision).toBe(revision);
    expect((await store().get('bulk-10'))?.defender.pollIntervalMinutes).toBe(60);
  });

  it('a delta push should enable a tenant again and change only what it names', async () => {
    await push(7, 'delta', [first[0]]);
    await waitFor(async () => (await store().get('bulk-0'))?.enabled === true);
    expect((await store().get('bulk-0'))?.generation).toBe(7);
    expect((await store().get('bulk-1'))?.enabled).toBe(false);
  });

  it('a registrar starting on an empty Redis should rebuild tenants and the generation from urs.tenants', async () => {
    await registrar.stop();
    await deleteKeysMatching(stack.redis.client, `${stack.redis.prefix}*`);
    registrar = await stack.start('registrar');
    expect(await store().ids()).toHaveLength(50);
    expect(await createRegistrarStateStore(stack.redis.client, stack.redis.prefix).lastGeneration()).toBe(7);
    await push(6, 'full', first.slice(10));
    await registrar.waitForLine(
      (line) => line.includes('older Director generation ignored') && line.includes('"generation":6'),
    );
    expect((await store().get('bulk-5'))?.enabled).toBe(true);
  });

  it('a push that is not JSON, or is a JSON string holding a push, should be dead-lettered without its secret', async () => {
    const before = deadLetters().length;
    const whole = JSON.stringify({ schemaVersion: 1, generation: 8, mode: 'delta', tenants: [tenant(60)] });
    const raw = [whole.slice(0, whole.indexOf(secrets.get('bulk-60') as string) + 12), JSON.stringify(whole)];
    await producer.send({
      topic: stack.topic('urs.registration'),
      messages: raw.map((value) => ({ key: 'director', value })),
    });
    await waitFor(() => deadLetters().length === before + 2);
    const letters = deadLetters().slice(before);
    expect(letters.map((letter) => letter.error.code)).toEqual(['MESSAGE_NOT_JSON', 'CONTRACT_INVALID']);
    for (const letter of letters) expect(letter.payload).toMatch(/^\[withheld: \d+ bytes/);
    expect(await store().get('bulk-60')).toBeNull();
  });

  it('a push refused as a whole should be dead-lettered without a secret under any name, with its reason', async () => {
    const secret = (name: string) => {
      const value = `Zz77Q~${randomBytes(12).toString('hex')}`;
      secrets.set(name, value);
      return value;
    };
    const misspelt = secret('misspelt');
    const credential = secret('credential');
    const pwd = secret('pwd');
    const nested = secret('credentials.value');
    const entry = tenant(70);
    const variants: Array<{ push: Record<string, unknown>; reason: RegExp }> = [
      {
        push: {
          schemaVersion: 1,
          generation: 9,
          mode: 'FULL',
          tenants: [{ ...entry, defender: { ...entry.defender, clientSecert: misspelt } }],
        },
        reason: /mode must be one of full, delta/,
      },
      {
        push: { schemaVersion: 1, generation: 9, mode: 'delta', tenants: [entry], credential },
        reason: /credential is not a known field/,
      },
      {
        push: {
          schemaVersion: 1,
          generation: 9,
          mode: 'delta',
          tenants: { 'bulk-71': { defender: { pwd } } },
        },
        reason: /tenants must be/,
      },
      {
        push: { schemaVersion: 1, generation: 9, mode: 'delta', tenants: [], credentials: { value: nested } },
        reason: /credentials is not a known field/,
      },
    ];
    const before = topics.messages.filter((m) => m.topic === stack.topic('urs.dlq')).length;
    await producer.send({
      topic: stack.topic('urs.registration'),
      messages: variants.map(({ push: value }) => ({ key: 'director', value: JSON.stringify(value) })),
    });
    await waitFor(() => deadLetters().length === before + variants.length);
    const received = topics.messages.filter((m) => m.topic === stack.topic('urs.dlq')).slice(before);
    for (const [index, message] of received.entries()) {
      const bytes = [message.key, message.text, ...Object.entries(message.headers).flat()].join('\n');
      for (const value of [misspelt, credential, pwd, nested]) expect(bytes).not.toContain(value);
      const letter = JSON.parse(message.text as string) as DeadLetter;
      expect(letter.error.code).toBe('CONTRACT_INVALID');
      expect(letter.error.message).toMatch((variants[index] as { reason: RegExp }).reason);
    }
    // What an operator needs stays: the structure, the tenant ids, the values the contract pins down.
    const first = JSON.parse(JSON.parse(received[0]?.text as string).payload as string);
    expect(first).toMatchObject({
      mode: 'FULL',
      generation: 9,
      tenants: [
        {
          tenantId: 'bulk-70',
          defender: { clientSecert: '[redacted]', clientSecret: '[redacted]', pollIntervalMinutes: 60 },
        },
      ],
    });
    const third = JSON.parse(JSON.parse(received[2]?.text as string).payload as string);
    expect(third).toEqual({
      schemaVersion: 1,
      generation: 9,
      mode: 'delta',
      tenants: { 'bulk-71': { defender: { pwd: '[redacted]' } } },
    });
    expect(await store().get('bulk-70')).toBeNull();
  });

  it('no secret of a push should appear in a log line, a dead letter or a REST answer', async () => {
    // A push of its own, so that there is something to search whichever tests ran before: one tenant applied
    // and one refused, each read back over REST.
    const applied = tenant(80);
    const refused = tenant(81, { pollIntervalMinutes: 5 });
    const letters = deadLetters().length;
    await push(10, 'delta', [applied, refused]);
    await waitFor(async () => (await store().get('bulk-80')) !== null, { timeoutMs: 20_000 });
    await waitFor(() => deadLetters().length === letters + 1);
    await registrar.waitForLine(
      (line) => line.includes('Director push applied') && line.includes('"generation":10'),
    );
    const baseUrl = `http://127.0.0.1:${portFrom(registrar.lines, 'REST listening', 'httpPort')}`;
    const own: string[] = [];
    for (const tenantId of ['bulk-80', 'bulk-81']) {
      const answer = await api(baseUrl, stack.apiToken, 'GET', `/v1/tenants/${tenantId}/defender`);
      own.push(answer.text);
      answers.push(answer.text);
    }
    expect(own[0]).toContain('"tenantId":"bulk-80"');
    expect(own[1]).toContain('TENANT_NOT_REGISTERED');
    expect(deadLetters().at(-1)).toMatchObject({ key: 'bulk-81', error: { code: 'REGISTRATION_INVALID' } });
    expect(secrets.get('bulk-80')).toBe(applied.defender.clientSecret);
    expect(secrets.get('bulk-81')).toBe(refused.defender.clientSecret);

    const texts = [
      ...stack.processes.flatMap((p) => p.lines),
      ...deadLetters().map((d) => JSON.stringify(d)),
      ...answers,
    ];
    for (const secret of secrets.values()) expect(texts.filter((text) => text.includes(secret))).toEqual([]);
  });
});

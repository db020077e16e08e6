import type { DeadLetter, RegistrationPush, TenantRecord } from '@urs/contracts';
import type { InboundMessage } from '@urs/bus';
import { silentLogger } from '@urs/logging';
import { inboundMessage } from '@urs/testkit';
import { createRegistrationHandler } from '../src/director';
import { TenantLockLostError } from '../src/tenant-lock';
import { TENANT_GENERATION_HEADER as GENERATION_HEADER } from '@urs/contracts';
import { Registry } from '@urs/telemetry';
import { UrsError } from '@urs/resilience';
import type { TenantRegistry } from '../src/registry';
import {
  memoryPublisher,
  memoryStateStore,
  memoryTenantStore,
  registrationBody,
  testRegistry,
} from './fakes';

/** `setup`'s registry, as the push handler sees it: `wrap` stands between them (a tenant's write failing). */
function setup(wrap: (registry: TenantRegistry) => TenantRegistry = (registry) => registry) {
  const tenants = memoryTenantStore();
  const state = memoryStateStore();
  const publisher = memoryPublisher();
  // The records' times and the pushes' starts come from the state store's clock (Redis's), a millisecond
  // later at each reading: what happened first has the earlier time.
  const registry = testRegistry({ tenants, state, publisher });
  let rebuilt = 0;
  const metrics = new Registry();
  const director = createRegistrationHandler({
    registry: wrap(registry),
    tenants,
    state,
    publisher,
    dlqTopic: 'urs.dlq',
    ensureRebuilt: async () => void rebuilt++,
    logger: silentLogger,
    metrics,
  });
  let offset = 0;
  const push = (
    generation: number,
    mode: 'full' | 'delta',
    items: unknown[],
    fields: Pick<InboundMessage<RegistrationPush>, 'heartbeat'> = {},
  ) => {
    const message = inboundMessage<RegistrationPush>(
      { schemaVersion: 1, generation, mode, tenants: items },
      { topic: 'urs.registration', offset: String(offset++), timestamp: Date.now(), ...fields },
    );
    return director.handle(message);
  };
  const records = () =>
    publisher.sent.filter((s) => s.topic === 'urs.tenants').map((s) => s.message.value as TenantRecord);
  const letters = () =>
    publisher.sent.filter((s) => s.topic === 'urs.dlq').map((s) => s.message.value as DeadLetter);
  /** The refused entries counted, as /metrics would show them. */
  const refusedCount = () => metrics.counter('urs_registrations_refused_total', '').get();
  /** The tenants a full push left out and could not disable, as /metrics would show them. */
  const leftEnabledCount = () => metrics.counter('urs_full_push_tenants_left_enabled_total', '').get();
  return {
    tenants,
    state,
    publisher,
    registry,
    push,
    records,
    letters,
    rebuilt: () => rebuilt,
    refusedCount,
    leftEnabledCount,
  };
}

const item = (tenantId: string, overrides: Record<string, unknown> = {}) => ({
  tenantId,
  defender: registrationBody(overrides),
});

describe('createRegistrationHandler', () => {
  it('should serve its counters at 0 before their first event, so that the alerts see it', () => {
    const metrics = new Registry({ processMetrics: false });
    createRegistrationHandler({
      ...({} as Parameters<typeof createRegistrationHandler>[0]),
      logger: silentLogger,
      metrics,
    });
    expect(metrics.expose()).toMatch(/^urs_registrations_refused_total 0$/m);
    expect(metrics.expose()).toMatch(/^urs_full_push_tenants_left_enabled_total 0$/m);
  });

  it('handle should apply valid tenants and dead-letter an invalid one, secret redacted, with its status', async () => {
    const { push, tenants, letters, rebuilt, refusedCount } = setup();
    const outcome = await push(1, 'full', [
      item('a'),
      item('b', { pollIntervalMinutes: 2 }),
      item('c'),
      { nonsense: true },
    ]);
    expect(outcome).toEqual({
      applied: 2,
      unchanged: 0,
      rejected: 2,
      failed: 0,
      disabled: 0,
      ignored: false,
    });
    // The push is handled; its refused entries are counted on their own, for the alert.
    expect(refusedCount()).toBe(2);
    expect(rebuilt()).toBe(1);
    expect(await tenants.ids()).toEqual(['a', 'c']);
    const [bad, nameless] = letters();
    expect(bad).toMatchObject({
      key: 'b',
      sourceTopic: 'urs.registration',
      partition: 0,
      offset: '0',
      error: { code: 'REGISTRATION_INVALID' },
    });
    expect(bad?.error.message).toMatch(
      /defender\.pollIntervalMinutes must be a whole number from 10 to 1440/,
    );
    expect(bad?.payload).not.toContain('Sup3r');
    expect(nameless?.key).toBeNull();
    expect(await tenants.getStatus('b')).toMatchObject({
      state: 'registration-rejected',
      registrationError: {
        code: 'REGISTRATION_INVALID',
        violations: [{ field: 'defender.pollIntervalMinutes' }],
        source: 'director',
        generation: 1,
      },
    });
  });

  it('handle should dead-letter an entry nested too deep to be written out, its payload withheld, and apply the others', async () => {
    const { push, tenants, letters } = setup();
    const depth = 20_000;
    const deep = JSON.parse(
      `{"tenantId":"deep","defender":${'['.repeat(depth)}${']'.repeat(depth)}}`,
    ) as unknown;
    expect(await push(1, 'full', [deep, item('a')])).toMatchObject({ applied: 1, rejected: 1 });
    expect(await tenants.ids()).toEqual(['a']);
    const [letter] = letters();
    expect(letter).toMatchObject({ key: 'deep', error: { code: 'REGISTRATION_INVALID' } });
    expect(letter?.payload).toBe('[withheld: a tenant entry nested too deep to be written out]');
  });

  it('handle should dead-letter an entry of 50,000 unknown keys within what urs.dlq takes, and apply the others', async () => {
    const { push, publisher, tenants, letters } = setup();
    // As Kafka does: urs.dlq (8 MiB, `max.message.bytes`) refuses a larger record, and the push would be held.
    const dlqBytes = 8 * 1024 * 1024;
    const send = publisher.send.bind(publisher);
    publisher.send = async (topic, contract, messages) => {
      for (const message of messages)
        if (topic === 'urs.dlq' && Buffer.byteLength(JSON.stringify(message.value)) > dlqBytes)
          throw new UrsError('RECORD_TOO_LARGE', `topic ${topic} refused a record as too large`);
      return send(topic, contract, messages);
    };
    const defender: Record<string, unknown> = registrationBody();
    for (let key = 0; key < 50_000; key++) defender[`${'unknownField'.repeat(14)}${key}`] = key;
    expect(await push(1, 'full', [item('a'), { tenantId: 'big', defender }, item('b')])).toMatchObject({
      applied: 2,
      rejected: 1,
    });
    expect(await tenants.ids()).toEqual(['a', 'b']);
    const [letter] = letters();
    expect(letter).toMatchObject({ key: 'big', error: { code: 'REGISTRATION_INVALID' } });
    expect(letter?.error.message).toMatch(/is not a known field \(\+49950 more\)$/);
    // The tenant's status lists as many of the violations, and says how many more there were.
    const refusal = (await tenants.getStatus('big')).registrationError;
    expect(refusal?.violations).toHaveLength(50);
    expect(refusal?.message).toMatch(/\(\+49950 more\)$/);
  });

  it('handle should keep a refused tenant in its dead letter without the values of fields it does not know', async () => {
    const { push, letters } = setup();
    // A mistyped key name no redaction recognises, holding the secret.
    const typo = {
      tenantId: 'd',
      defender: { ...registrationBody(), clientSecert: 'Zx9~typo-secret' },
      extra: 'x',
    };
    expect(await push(1, 'full', [typo])).toMatchObject({ rejected: 1 });
    const letter = letters()[0];
    expect(letter?.error.message).toMatch(
      /defender: must NOT have additional properties \(clientSecert\)|clientSecert/,
    );
    expect(letter?.payload).not.toContain('Zx9~typo-secret');
    expect(JSON.parse(letter?.payload as string)).toMatchObject({
      tenantId: 'd',
      extra: '[redacted]',
      defender: { clientSecert: '[redacted]', pollIntervalMinutes: 15, clientSecret: '[redacted]' },
    });
  });

  it('handle should refuse a secret that cannot be an Entra ID secret, dead-lettered without it, and write nothing', async () => {
    const { push, tenants, records, letters } = setup();
    const secrets = ['abc8Q~secret\ud800', 'abc8Q~pasted\n', '   ', 'abc8Q~\u0000ctl'];
    const entries = secrets.map((clientSecret, index) => item(`s${index}`, { clientSecret }));
    expect(await push(1, 'delta', entries)).toMatchObject({ applied: 0, rejected: 4 });
    // The same push again: still refused, never a record (an unpaired surrogate sealed as UTF-8 came back
    // as U+FFFD, so each identical push counted as a change).
    expect(await push(2, 'delta', entries)).toMatchObject({ applied: 0, rejected: 4 });
    expect(records()).toEqual([]);
    expect(await tenants.ids()).toEqual([]);
    expect(letters()).toHaveLength(8);
    for (const [index, letter] of letters().entries()) {
      expect(letter.error.message).toMatch(
        new RegExp(
          `^registration refused: tenants\\[${index % 4}\\]\\.defender\\.clientSecret must be the secret's Value`,
        ),
      );
      expect(JSON.parse(letter.payload as string)).toMatchObject({
        tenantId: `s${index % 4}`,
        defender: { clientSecret: '[redacted]' },
      });
      for (const part of ['abc8Q', 'secret', 'pasted', 'ctl']) expect(letter.payload).not.toContain(part);
    }
    expect(await tenants.getStatus('s0')).toMatchObject({ state: 'registration-rejected' });
  });

  it('handle should keep a valid secret out of the dead letter of an entry refused for another field', async () => {
    const { push, letters } = setup();
    await push(1, 'delta', [item('a', { clientSecret: 'Zx9~Valid secret.Value', pollIntervalMinutes: 9 })]);
    const letter = letters()[0];
    expect(letter?.error.message).toBe(
      'registration refused: tenants[0].defender.pollIntervalMinutes must be a whole number from 10 to 1440',
    );
    expect(letter?.payload).not.toContain('Zx9');
    expect(JSON.parse(letter?.payload as string)).toMatchObject({ defender: { clientSecret: '[redacted]' } });
  });

  it('handle should keep a refused risk profile value out of the dead letter, the status and the payload', async () => {
    const { push, tenants, letters } = setup();
    const value = 'Zx9~profile-value';
    await push(1, 'delta', [item('p', { riskProfile: { missingSignals: value } })]);
    const letter = letters()[0];
    expect(letter?.error.message).toBe(
      'registration refused: tenants[0].defender.riskProfile.missingSignals must be one of "ignore", "assume-worst"',
    );
    expect(JSON.stringify(letter)).not.toContain(value);
    const status = await tenants.getStatus('p');
    expect(status).toMatchObject({ state: 'registration-rejected' });
    expect(JSON.stringify(status)).not.toContain(value);
  });

  it('handle should heartbeat while it records the refusals of a push of many refused entries, and send their dead letters together', async () => {
    const { push, publisher, tenants, letters, refusedCount } = setup();
    const dlqSends: number[] = [];
    const send = publisher.send.bind(publisher);
    publisher.send = async (topic, contract, messages) => {
      if (topic === 'urs.dlq') dlqSends.push(messages.length);
      await send(topic, contract, messages);
    };
    const count = 500;
    const items = Array.from({ length: count }, (_, i) => ({ ...item(`t${i}`), unknownField: true }));
    // What was recorded when each heartbeat came: the consumer's session must not lapse mid-push.
    const recordedAtHeartbeat: number[] = [];
    const heartbeat = async () => void recordedAtHeartbeat.push(tenants.statuses.size);
    expect(await push(1, 'full', items, { heartbeat })).toMatchObject({ rejected: count });
    expect(tenants.statuses.size).toBe(count);
    expect(refusedCount()).toBe(count);
    expect(recordedAtHeartbeat.some((recorded) => recorded > 0 && recorded < count)).toBe(true);
    // One dead letter an entry, in one send (the publisher splits it by size), not one send an entry.
    expect(letters()).toHaveLength(count);
    expect(dlqSends).toEqual([count]);
  });

  it('handle should name a refused entry by its place in the push, in its dead letter', async () => {
    const { push, letters } = setup();
    await push(1, 'delta', [item('a'), item('b', { clientId: 'nope' }), null, 'acme', 42]);
    expect(letters().map((letter) => [letter.key, letter.error.message])).toEqual([
      [
        'b',
        'registration refused: tenants[1].defender.clientId must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)',
      ],
      [null, 'registration refused: tenants[2] must be an object'],
      [null, 'registration refused: tenants[3] must be an object'],
      [null, 'registration refused: tenants[4] must be an object'],
    ]);
  });

  it('handle should apply the last entry of a tenant listed twice', async () => {
    const { push, tenants } = setup();
    await push(1, 'full', [item('a', { pollIntervalMinutes: 20 }), item('a', { pollIntervalMinutes: 30 })]);
    expect((await tenants.get('a'))?.defender.pollIntervalMinutes).toBe(30);
    // A refused last entry keeps the earlier record untouched.
    await push(2, 'full', [item('a', { pollIntervalMinutes: 40 }), item('a', { pollIntervalMinutes: 1 })]);
    expect((await tenants.get('a'))?.defender.pollIntervalMinutes).toBe(30);
  });

  it('handle should neither count nor put in its status the refused entry of a tenant that a later valid entry replaces', async () => {
    const { push, tenants, letters, refusedCount } = setup();
    const outcome = await push(1, 'full', [
      item('a', { clientId: 'nope' }),
      item('b'),
      item('a', { pollIntervalMinutes: 30 }),
    ]);
    expect(outcome).toMatchObject({ applied: 2, rejected: 1 });
    expect(refusedCount()).toBe(0);
    expect((await tenants.get('a'))?.defender.pollIntervalMinutes).toBe(30);
    const status = await tenants.getStatus('a');
    expect(status.state).toBe('active');
    expect(status.registrationError ?? null).toBeNull();
    // Still dead-lettered, saying which entry took its place.
    expect(letters().map((letter) => [letter.key, letter.error.message])).toEqual([
      [
        'a',
        'registration refused, replaced by tenants[2] of the same push: tenants[0].defender.clientId must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)',
      ],
    ]);
    // Replaced by an entry the tenant is registered as already: unchanged, and still not refused.
    expect(
      await push(2, 'delta', [item('a', { clientId: 'nope' }), item('a', { pollIntervalMinutes: 30 })]),
    ).toMatchObject({ unchanged: 1, rejected: 1 });
    expect(refusedCount()).toBe(0);
    expect((await tenants.getStatus('a')).registrationError ?? null).toBeNull();
    // A refused entry after the valid one is the last: it counts, and the record stays as it was.
    await push(3, 'delta', [item('a', { pollIntervalMinutes: 40 }), item('a', { clientId: 'nope' })]);
    expect(refusedCount()).toBe(1);
    expect(await tenants.getStatus('a')).toMatchObject({ registrationError: { generation: 3 } });
    expect((await tenants.get('a'))?.defender.pollIntervalMinutes).toBe(30);
  });

  it('handle should ignore an older generation and apply the same one again', async () => {
    const { push, state, tenants } = setup();
    await push(5, 'delta', [item('a')]);
    expect(state.generation).toBe(5);
    expect((await push(4, 'delta', [item('a', { pollIntervalMinutes: 99 })])).ignored).toBe(true);
    expect((await tenants.get('a'))?.defender.pollIntervalMinutes).toBe(15);
    expect(await push(5, 'delta', [item('a', { pollIntervalMinutes: 99 })])).toMatchObject({
      applied: 1,
      ignored: false,
    });
  });

  it('handle should keep what an administrator changed over REST when the last generation comes again', async () => {
    const { push, tenants, registry } = setup();
    await push(5, 'full', [item('a'), item('b')]);
    // Generation 5 was applied; an administrator changes a, then generation 5 is delivered again.
    await registry.register(
      {
        tenantId: 'a',
        defender: registrationBody({ pollIntervalMinutes: 60, clientSecret: 'rotated~secret' }) as never,
      },
      { source: 'rest' },
    );
    await registry.disable('b', 'by hand', { source: 'director', generation: 5 });
    expect(await push(5, 'full', [item('a'), item('b')])).toMatchObject({ applied: 1, unchanged: 1 });
    expect(await tenants.get('a')).toMatchObject({ source: 'rest', defender: { pollIntervalMinutes: 60 } });
    expect((await tenants.get('b'))?.enabled).toBe(true);
    // A newer generation is Director's again.
    expect(await push(6, 'full', [item('a'), item('b')])).toMatchObject({ applied: 1, unchanged: 1 });
    expect(await tenants.get('a')).toMatchObject({
      source: 'director',
      defender: { pollIntervalMinutes: 15 },
    });
  });

  it('handle should leave enabled the tenants a full push left out that an administrator enabled again over REST, when that generation comes again', async () => {
    const { push, tenants, registry } = setup();
    await push(4, 'full', [item('a'), item('b'), item('kept')]);
    await push(5, 'full', [item('a'), item('kept')]);
    // a: disabled by generation 6 itself; b: disabled by generation 5, which 6 finds disabled.
    await push(6, 'full', [item('kept')]);
    expect(await tenants.get('a')).toMatchObject({ enabled: false, generation: 6 });
    expect(await tenants.get('b')).toMatchObject({ enabled: false, generation: 5 });
    // Generation 6 is applied; an administrator enables a and b again, then generation 6 is delivered again.
    for (const tenantId of ['a', 'b'])
      await registry.register({ tenantId, defender: registrationBody() as never }, { source: 'rest' });
    expect(await push(6, 'full', [item('kept')])).toMatchObject({ disabled: 0 });
    for (const tenantId of ['a', 'b'])
      expect(await tenants.get(tenantId)).toMatchObject({ source: 'rest', enabled: true });
    // A newer full push leaving them out disables them: Director registered them.
    expect(await push(7, 'full', [item('kept')])).toMatchObject({ disabled: 2 });
    for (const tenantId of ['a', 'b'])
      expect(await tenants.get(tenantId)).toMatchObject({
        enabled: false,
        disabledReason: 'missing from Director full push 7',
      });
  });

  it("handle should make a REST tenant Director's when a newer generation lists it as it is, so a later full push leaving it out disables it", async () => {
    const { push, tenants, registry } = setup();
    await push(1, 'full', [item('a')]);
    const bySomeone = { pollIntervalMinutes: 60 };
    await registry.register(
      { tenantId: 'a', defender: registrationBody(bySomeone) as never },
      { source: 'rest' },
    );
    expect((await tenants.get('a'))?.source).toBe('rest');
    expect(await push(2, 'full', [item('a', bySomeone)])).toMatchObject({ applied: 1, unchanged: 0 });
    expect(await tenants.get('a')).toMatchObject({ source: 'director', generation: 2 });
    expect(await push(3, 'full', [])).toMatchObject({ disabled: 1 });
    expect(await tenants.get('a')).toMatchObject({
      enabled: false,
      disabledReason: 'missing from Director full push 3',
    });
  });

  it('handle should disable a tenant Director registered and an administrator then edited when a full push leaves it out, and keep a REST-only tenant', async () => {
    const { push, tenants, registry } = setup();
    await push(1, 'full', [item('a'), item('b')]);
    // Its secret rotated over REST: the record is the administrator's now, but the tenant is still Director's.
    await registry.register(
      { tenantId: 'a', defender: registrationBody({ clientSecret: 'rotated~secret' }) as never },
      { source: 'rest' },
    );
    await registry.register({ tenantId: 'own', defender: registrationBody() as never }, { source: 'rest' });
    expect(await tenants.get('a')).toMatchObject({ source: 'rest', enabled: true });
    expect(await push(2, 'full', [item('b')])).toMatchObject({ disabled: 1 });
    expect(await tenants.get('a')).toMatchObject({
      enabled: false,
      disabledReason: 'missing from Director full push 2',
    });
    expect(await tenants.get('own')).toMatchObject({ source: 'rest', enabled: true });
  });

  it('handle should leave a tenant an administrator deleted deleted when the last generation comes again', async () => {
    const { push, tenants, registry, publisher } = setup();
    await push(5, 'full', [item('a'), item('b')]);
    expect(await registry.remove('b')).toBe(true);
    const tombstone = publisher.sent.at(-1)?.message;
    expect(tombstone).toMatchObject({ key: 'b', value: null, headers: { [GENERATION_HEADER]: '5' } });
    expect(await push(5, 'full', [item('a'), item('b')])).toMatchObject({ applied: 0, unchanged: 2 });
    expect(await tenants.get('b')).toBeNull();
    // A newer generation listing it is Director's newer intent.
    expect(await push(6, 'full', [item('a'), item('b')])).toMatchObject({ applied: 1, unchanged: 1 });
    expect(await tenants.get('b')).toMatchObject({ source: 'director', generation: 6 });
  });

  /**
   * `setup`, an administrator's DELETE of `tenantId` coming once `deleteNow` is set and the push reaches the
   * tenant: after the push began, before it writes (or refuses) the tenant.
   */
  function deletedMidway(tenantId: string) {
    let deleteNow = false;
    let registry: TenantRegistry | undefined;
    const deleteFirst = async (id: string): Promise<void> => {
      if (id !== tenantId || !deleteNow) return;
      deleteNow = false;
      expect(await registry?.remove(id)).toBe(true);
    };
    const context = setup((inner) => {
      registry = inner;
      return {
        ...inner,
        registerUnlessDeleted: async (registration, origin, options) => {
          await deleteFirst(registration.tenantId);
          return inner.registerUnlessDeleted(registration, origin, options);
        },
        reject: async (id, reason, origin) => {
          await deleteFirst(id);
          return inner.reject(id, reason, origin);
        },
      };
    });
    return { ...context, deleteMidway: () => void (deleteNow = true) };
  }

  it('handle should leave deleted a tenant an administrator deletes while a push listing it is under way', async () => {
    const { push, tenants, deleteMidway } = deletedMidway('t');
    await push(1, 'full', [item('t'), item('u')]);
    deleteMidway();
    // Left deleted, t counts as unchanged (as a deleted tenant of a push delivered again does).
    expect(await push(2, 'full', [item('t'), item('u', { pollIntervalMinutes: 30 })])).toMatchObject({
      applied: 1,
      unchanged: 1,
    });
    expect(await tenants.get('t')).toBeNull();
    // The same push delivered again leaves it deleted; a newer generation listing it is Director's newer intent.
    await push(2, 'full', [item('t'), item('u', { pollIntervalMinutes: 30 })]);
    expect(await tenants.get('t')).toBeNull();
    expect(await push(3, 'full', [item('t'), item('u')])).toMatchObject({ applied: 2 });
    expect(await tenants.get('t')).toMatchObject({ source: 'director', generation: 3 });
  });

  it('handle should leave deleted the refused status an administrator deletes while a push refusing the tenant again is under way', async () => {
    const { push, tenants, deleteMidway, refusedCount } = deletedMidway('never');
    const entries = [item('a'), item('never', { clientId: 'nope' })];
    await push(1, 'full', entries);
    expect(await tenants.getStatus('never')).toMatchObject({ state: 'registration-rejected' });
    deleteMidway();
    await push(2, 'full', entries);
    expect(await tenants.getStatus('never')).toEqual({});
    expect(refusedCount()).toBe(1);
    await push(3, 'full', entries);
    expect(await tenants.getStatus('never')).toMatchObject({ registrationError: { generation: 3 } });
  });

  it('handle should leave deleted a tenant an administrator deletes while a push that found it unchanged is held, when that push comes again', async () => {
    const down = new UrsError('STORE_DOWN', 'Redis refused the write', { infrastructure: true });
    let held = true;
    const { push, tenants, registry } = setup((inner) => ({
      ...inner,
      registerUnlessDeleted: async (registration, origin, options) => {
        if (registration.tenantId === 'b' && held) throw down;
        return inner.registerUnlessDeleted(registration, origin, options);
      },
    }));
    held = false;
    await push(1, 'full', [item('t'), item('b')]);
    held = true;
    const second = [item('t'), item('b', { pollIntervalMinutes: 30 })];
    // t is unchanged (its record keeps generation 1); b's write fails for Redis: the push is held.
    await expect(push(2, 'full', second)).rejects.toBe(down);
    expect(await tenants.get('t')).toMatchObject({ generation: 1 });
    expect(await registry.remove('t')).toBe(true);
    held = false;
    expect(await push(2, 'full', second)).toMatchObject({ applied: 1, unchanged: 1 });
    expect(await tenants.get('t')).toBeNull();
  });

  it('handle should ignore an older generation after Redis lost the last one this process applied', async () => {
    const { push, state, tenants } = setup();
    await push(7, 'full', [item('a')]);
    await push(8, 'full', [item('a')]);
    // Redis wiped before the registration offsets were committed: the rebuild could not see 8.
    state.generation = 7;
    expect(await push(7, 'full', [item('a', { pollIntervalMinutes: 30 })])).toMatchObject({ ignored: true });
    expect((await tenants.get('a'))?.defender.pollIntervalMinutes).toBe(15);
  });

  it('handle should not write over the settings of an administrator who changes a tenant while a full push leaves it out', async () => {
    const { push, tenants, registry } = setup();
    await push(1, 'full', [item('a'), item('b')]);
    // The push reads a to disable it; an administrator's PUT of a comes right then (here or on another
    // replica), and the push's read returns once the PUT is done or after 100 ms.
    let put: Promise<unknown> | undefined;
    const get = tenants.get.bind(tenants);
    tenants.get = async (tenantId) => {
      const record = await get(tenantId);
      if (tenantId !== 'a' || put) return record;
      put = registry.register(
        {
          tenantId: 'a',
          defender: registrationBody({ pollIntervalMinutes: 60, clientSecret: 'rotated~secret' }) as never,
        },
        { source: 'rest' },
      );
      await Promise.race([put, new Promise((resolve) => setTimeout(resolve, 100))]);
      return record;
    };
    await push(2, 'full', [item('b')]);
    await put;
    // The PUT takes the lock once the push disabled the tenant: the administrator's newer write stands.
    expect(await get('a')).toMatchObject({
      source: 'rest',
      enabled: true,
      defender: { pollIntervalMinutes: 60 },
    });
  });

  it('handle should not write a new revision for a tenant it keeps disabling', async () => {
    const { push, records } = setup();
    await push(1, 'full', [item('a', { enabled: false })]);
    expect(await push(2, 'full', [item('a', { enabled: false })])).toMatchObject({
      applied: 0,
      unchanged: 1,
    });
    expect(await push(3, 'full', [item('a', { enabled: false })])).toMatchObject({
      applied: 0,
      unchanged: 1,
    });
    expect(records()).toHaveLength(1);
    expect(records()[0]).toMatchObject({
      enabled: false,
      disabledReason: 'disabled by Director',
      generation: 1,
    });
  });

  it('handle should clear the next poll time of a tenant an entry disables, as a full push leaving it out does', async () => {
    const { push, tenants } = setup();
    await push(1, 'full', [item('a'), item('b')]);
    for (const tenantId of ['a', 'b'])
      await tenants.updateStatus(tenantId, { nextPollAt: new Date(Date.now() + 3_600_000).toISOString() });
    await push(2, 'full', [item('a', { enabled: false })]);
    for (const tenantId of ['a', 'b']) {
      const status = await tenants.getStatus(tenantId);
      expect(status.state).toBe('disabled');
      expect(status).not.toHaveProperty('nextPollAt');
    }
  });

  it('handle should clear a refusal from the status when the tenant comes again as it is registered', async () => {
    const { push, tenants } = setup();
    await push(1, 'full', [item('a')]);
    await push(2, 'full', [item('a', { pollIntervalMinutes: 5 })]);
    expect(await tenants.getStatus('a')).toMatchObject({ registrationError: { generation: 2 } });
    expect(await push(3, 'full', [item('a')])).toMatchObject({ applied: 0, unchanged: 1 });
    const status = await tenants.getStatus('a');
    expect(status.state).toBe('active');
    expect(status.registrationError ?? null).toBeNull();
  });

  it('handle should clear a refusal from the status of a tenant a later full push leaves out', async () => {
    const { push, tenants } = setup();
    await push(1, 'full', [item('a'), item('b'), item('off', { enabled: false })]);
    await push(2, 'full', [
      item('a'),
      item('b', { pollIntervalMinutes: 5 }),
      item('off', { enabled: true, clientId: 'nope' }),
    ]);
    expect(await tenants.getStatus('b')).toMatchObject({
      state: 'active',
      registrationError: { generation: 2 },
    });
    expect(await tenants.getStatus('off')).toMatchObject({ registrationError: { generation: 2 } });
    // Director's newer decision: neither is listed any more. The refused updates no longer stand.
    expect(await push(3, 'full', [item('a')])).toMatchObject({ disabled: 1 });
    for (const tenantId of ['b', 'off']) {
      expect(await tenants.get(tenantId)).toMatchObject({ enabled: false });
      const status = await tenants.getStatus(tenantId);
      expect(status.state).toBe('disabled');
      expect(status.registrationError ?? null).toBeNull();
    }
  });

  it("handle should clear Director's refusal of an administrator's tenant a later full push leaves out, and leave the tenant enabled", async () => {
    const { push, tenants, registry, records } = setup();
    await registry.register(
      { tenantId: 'acme', defender: registrationBody() as never },
      { source: 'rest' },
      { skipIfUnchanged: true },
    );
    // A newer generation writes over a REST tenant it lists: its refused entry is put in the status.
    await push(5, 'full', [item('acme', { clientId: 'nope' })]);
    expect(await tenants.getStatus('acme')).toMatchObject({ registrationError: { generation: 5 } });
    const written = records().length;
    // Director no longer lists it: the refused update describes nothing pending.
    expect(await push(6, 'full', [])).toMatchObject({ disabled: 0 });
    const status = await tenants.getStatus('acme');
    expect(status.registrationError ?? null).toBeNull();
    expect(status.state).toBe('active');
    expect(await tenants.get('acme')).toMatchObject({ source: 'rest', enabled: true });
    expect(records()).toHaveLength(written);
  });

  it('handle should end the status of a tenant with no record, refused by Director, that a later full push leaves out', async () => {
    const { push, tenants, registry } = setup();
    await push(1, 'full', [item('a'), item('never', { clientId: 'nope' })]);
    await push(2, 'delta', [item('listed', { clientId: 'nope' })]);
    // A refusal an administrator's own write recorded is not Director's to end.
    await registry.reject('admin', [{ field: 'defender.clientId', rule: 'must be a GUID' }], {
      source: 'rest',
    });
    expect(await tenants.getStatus('never')).toMatchObject({
      state: 'registration-rejected',
      registrationError: { generation: 1 },
    });
    // A delta push says nothing of the tenants it leaves out.
    await push(3, 'delta', [item('a')]);
    expect(await tenants.getStatus('never')).toMatchObject({ state: 'registration-rejected' });
    // Director's newer decision: `never` is not registered. `listed` is still there, and still refused.
    expect(await push(4, 'full', [item('a'), item('listed', { clientId: 'nope' })])).toMatchObject({
      disabled: 0,
    });
    expect(await tenants.getStatus('never')).toEqual({});
    expect(await tenants.get('never')).toBeNull();
    expect(await tenants.getStatus('listed')).toMatchObject({
      state: 'registration-rejected',
      registrationError: { generation: 4 },
    });
    expect(await tenants.getStatus('admin')).toMatchObject({
      state: 'registration-rejected',
      registrationError: { source: 'rest' },
    });
    expect(await tenants.ids()).toEqual(['a']);
  });

  it('handle should count a refused entry once per tenant and generation, not again when its push is handled again', async () => {
    const { push, refusedCount, letters } = setup();
    const entries = [item('a'), item('b', { clientId: 'nope' }), { nonsense: true }];
    expect(await push(1, 'full', entries)).toMatchObject({ rejected: 2 });
    expect(refusedCount()).toBe(2);
    // The same push delivered again (a rebalance, a restart before its offset was committed): no new refusal.
    expect(await push(1, 'full', entries)).toMatchObject({ rejected: 2 });
    expect(refusedCount()).toBe(2);
    // Its dead letters are written again: at least once, as the push is handled.
    expect(letters()).toHaveLength(4);
    // A newer generation refusing the same entries refuses them again.
    expect(await push(2, 'full', entries)).toMatchObject({ rejected: 2 });
    expect(refusedCount()).toBe(4);
    // A tenant listed twice, both entries refused: one tenant, one generation.
    expect(
      await push(3, 'delta', [item('b', { clientId: 'nope' }), item('b', { pollIntervalMinutes: 1 })]),
    ).toMatchObject({ rejected: 2 });
    expect(refusedCount()).toBe(5);
  });

  it('handle should leave a tenant whose refused status an administrator deleted deleted when its generation comes again', async () => {
    const { push, tenants, registry, refusedCount } = setup();
    const entries = [item('a'), item('never', { clientId: 'nope' })];
    await push(5, 'full', entries);
    expect(await registry.remove('never')).toBe(true);
    // Generation 5 delivered again: the administrator's deletion stands, and the refusal is not counted again.
    await push(5, 'full', entries);
    expect(await tenants.getStatus('never')).toEqual({});
    expect(refusedCount()).toBe(1);
    // A newer generation refusing it again is Director's newer intent.
    await push(6, 'full', entries);
    expect(await tenants.getStatus('never')).toMatchObject({
      state: 'registration-rejected',
      registrationError: { generation: 6 },
    });
    expect(refusedCount()).toBe(2);
  });

  it('handle should dead-letter, and not put in its status, a refused entry that would not have applied to the tenant', async () => {
    const { push, tenants, registry, letters } = setup();
    await push(5, 'full', [item('a'), item('d')]);
    // An administrator takes a over, and deletes d, while generation 5 is in force.
    await registry.register(
      { tenantId: 'a', defender: registrationBody({ pollIntervalMinutes: 60 }) as never },
      { source: 'rest' },
    );
    expect(await registry.remove('d')).toBe(true);
    // Generation 5 delivered again, its entries of a and d refused: valid, they would have been left alone.
    expect(
      await push(5, 'full', [item('a', { pollIntervalMinutes: 5 }), item('d', { clientId: 'nope' })]),
    ).toMatchObject({ rejected: 2 });
    expect(letters().map((letter) => letter.key)).toEqual(['a', 'd']);
    expect(await tenants.get('a')).toMatchObject({ source: 'rest', defender: { pollIntervalMinutes: 60 } });
    expect((await tenants.getStatus('a')).registrationError ?? null).toBeNull();
    expect(await tenants.get('d')).toBeNull();
    expect(await tenants.getStatus('d')).toEqual({});
    // A newer generation would take a over (and register d again): its refusal stands in their status.
    expect(
      await push(6, 'full', [item('a', { pollIntervalMinutes: 5 }), item('d', { clientId: 'nope' })]),
    ).toMatchObject({ rejected: 2 });
    expect(await tenants.getStatus('a')).toMatchObject({ registrationError: { generation: 6 } });
    expect(await tenants.getStatus('d')).toMatchObject({
      state: 'registration-rejected',
      registrationError: { generation: 6 },
    });
  });

  it('handle should keep a refused update of a registered tenant in its status through its cycles', async () => {
    const { push, tenants, records } = setup();
    await push(5, 'full', [item('a')]);
    await tenants.updateStatus('a', {
      state: 'error',
      lastErrorCode: 'SECRET_UNREADABLE',
      lastErrorMessage: 'poller replica-0: the secret does not open',
      lastErrorCycleId: 'a-1',
    });
    expect(await push(6, 'delta', [item('a', { clientSecret: 'Rotated~secret-value\n' })])).toMatchObject({
      rejected: 1,
    });
    expect(records()).toHaveLength(1);
    // The polling's own status stays as it was: the record in force is polled as before.
    expect(await tenants.getStatus('a')).toMatchObject({
      state: 'error',
      lastErrorCode: 'SECRET_UNREADABLE',
      registrationError: {
        code: 'REGISTRATION_INVALID',
        message: expect.stringMatching(
          /^registration refused: defender\.clientSecret must be the secret's Value/,
        ),
        violations: [{ field: 'defender.clientSecret' }],
        source: 'director',
        generation: 6,
      },
    });
    await tenants.cycleListed('a', 'a-2', { deviceCount: 7 });
    const status = await tenants.getStatus('a');
    expect(status).toMatchObject({ state: 'active', deviceCount: 7, registrationError: { generation: 6 } });
    expect(status.lastErrorCode).toBeUndefined();
    expect(await push(7, 'delta', [item('a', { clientSecret: 'Rotated~secret-value' })])).toMatchObject({
      applied: 1,
    });
    expect((await tenants.getStatus('a')).registrationError).toBeUndefined();
  });

  it('handle should not write a new revision for an unchanged tenant', async () => {
    const { push, records } = setup();
    await push(1, 'full', [item('a'), item('b')]);
    expect(await push(2, 'full', [item('a'), item('b', { clientSecret: 'another~secret' })])).toMatchObject({
      applied: 1,
      unchanged: 1,
    });
    expect(records().map((r) => r.tenantId)).toEqual(['a', 'b', 'b']);
  });

  it('handle should disable the Director tenants a full push leaves out, never delete them, and leave REST ones', async () => {
    const { push, tenants, registry } = setup();
    await push(1, 'full', [item('a'), item('b'), item('c')]);
    await registry.register(
      { tenantId: 'admin-made', defender: registrationBody() as never },
      { source: 'rest' },
    );
    expect(await push(2, 'full', [item('a'), item('c', { azureTenantId: 'broken' })])).toMatchObject({
      disabled: 1,
      rejected: 1,
    });
    expect(await tenants.get('b')).toMatchObject({
      enabled: false,
      disabledReason: 'missing from Director full push 2',
      generation: 2,
    });
    // Present but refused: kept as it was.
    expect((await tenants.get('c'))?.enabled).toBe(true);
    expect((await tenants.get('admin-made'))?.enabled).toBe(true);
    expect(await tenants.ids()).toEqual(['a', 'admin-made', 'b', 'c']);
    // A delta push leaves out tenants without disabling anyone; disabled ones are not disabled twice.
    expect(await push(3, 'delta', [item('a')])).toMatchObject({ disabled: 0 });
    expect(await push(4, 'full', [item('a'), item('c')])).toMatchObject({ disabled: 0 });
  });

  /** What a produce rejects with when the broker refuses the record as larger than the topic takes. */
  const kafkaTooLarge = (): Error =>
    Object.assign(new Error('The request included a message larger than the max message size'), {
      name: 'KafkaJSProtocolError',
      type: 'MESSAGE_TOO_LARGE',
      retriable: false,
    });

  /** A registry whose writes of `tenantId` fail with what `failure` gives, attempt by attempt (undefined: written). */
  const failingFor =
    (tenantId: string, failure: (attempt: number) => unknown) =>
    (registry: TenantRegistry): TenantRegistry => {
      let attempts = 0;
      const failing =
        <A extends unknown[], R>(of: (...args: A) => string, call: (...args: A) => Promise<R>) =>
        async (...args: A): Promise<R> => {
          if (of(...args) === tenantId) {
            const error = failure(++attempts);
            if (error !== undefined) throw error;
          }
          return call(...args);
        };
      return {
        ...registry,
        registerUnlessDeleted: failing(
          (registration) => registration.tenantId,
          registry.registerUnlessDeleted,
        ),
        disable: failing((id) => id, registry.disable),
      };
    };

  it('handle should dead-letter a tenant whose write fails for its own reason, record it in its status, and apply the rest of a full push', async () => {
    const sealFailed = new UrsError('SECRET_SEAL_FAILED', 'the secret of tenant b could not be sealed');
    const { push, tenants, state, letters, refusedCount } = setup(failingFor('b', () => sealFailed));
    await push(1, 'full', [item('a'), item('gone')]);
    const outcome = await push(2, 'full', [item('a', { pollIntervalMinutes: 20 }), item('b'), item('c')]);
    expect(outcome).toEqual({
      applied: 2,
      unchanged: 0,
      rejected: 0,
      failed: 1,
      disabled: 1,
      ignored: false,
    });
    expect((await tenants.get('a'))?.defender.pollIntervalMinutes).toBe(20);
    expect(await tenants.get('b')).toBeNull();
    expect(await tenants.get('c')).not.toBeNull();
    // The disable pass and the generation ran all the same.
    expect(await tenants.get('gone')).toMatchObject({ enabled: false });
    expect(state.generation).toBe(2);
    const [letter, ...more] = letters();
    expect(more).toEqual([]);
    expect(letter).toMatchObject({
      key: 'b',
      sourceTopic: 'urs.registration',
      offset: '1',
      error: { code: 'SECRET_SEAL_FAILED' },
    });
    expect(letter?.error.message).toContain('the secret of tenant b could not be sealed');
    expect(letter?.payload).not.toContain('Sup3r');
    expect(await tenants.getStatus('b')).toMatchObject({
      state: 'registration-rejected',
      registrationError: {
        code: 'SECRET_SEAL_FAILED',
        violations: [],
        source: 'director',
        generation: 2,
      },
    });
    expect(refusedCount()).toBe(1);
  });

  it.each([
    ['as Kafka answered it', (): Error => kafkaTooLarge()],
    [
      'as the publisher says it',
      (): Error =>
        new UrsError(
          'RECORD_TOO_LARGE',
          'topic urs.tenants refused a record as too large (MESSAGE_TOO_LARGE)',
          {
            cause: kafkaTooLarge(),
          },
        ),
    ],
  ])(
    'handle should dead-letter only the tenant whose record Kafka refuses as too large (%s), applying the rest of the push',
    async (_name, tooLarge) => {
      const { push, tenants, state, letters } = setup(failingFor('b', () => tooLarge()));
      const outcome = await push(1, 'full', [item('a'), item('b'), item('c')]);
      expect(outcome).toMatchObject({ applied: 2, failed: 1 });
      expect(await tenants.get('a')).not.toBeNull();
      expect(await tenants.get('c')).not.toBeNull();
      expect(state.generation).toBe(1);
      expect(letters().map((letter) => letter.key)).toEqual(['b']);
    },
  );

  it('handle should hold the whole push when a tenant fails for a fault of Redis or Kafka', async () => {
    const down = new UrsError('STORE_DOWN', 'Redis refused the write', { infrastructure: true });
    const { push, tenants, state, letters } = setup(failingFor('b', () => down));
    await push(1, 'full', [item('a'), item('gone')]);
    await expect(push(2, 'full', [item('a'), item('b'), item('c')])).rejects.toBe(down);
    expect(state.generation).toBe(1);
    expect(letters()).toEqual([]);
    expect((await tenants.get('gone'))?.enabled).toBe(true);
  });

  it('handle should hold the whole push when a tenant fails for no reason of its own (Kafka refusing the topic, a defect)', async () => {
    const refusedTopic = Object.assign(
      new Error('Not authorized to access topics: [Topic authorization failed]'),
      {
        name: 'KafkaJSProtocolError',
        type: 'TOPIC_AUTHORIZATION_FAILED',
        retriable: false,
      },
    );
    for (const failure of [
      refusedTopic,
      new TypeError("Cannot read properties of undefined (reading 'x')"),
    ]) {
      const { push, state, letters } = setup(failingFor('b', () => failure));
      await push(1, 'full', [item('a')]);
      await expect(push(2, 'full', [item('a'), item('b'), item('c')])).rejects.toBe(failure);
      expect(letters()).toEqual([]);
      expect(state.generation).toBe(1);
    }
  });

  it('handle should keep what an administrator changed over REST while a push held for a fault was waiting to be handled again', async () => {
    const down = new UrsError('STORE_DOWN', 'Redis refused the write', { infrastructure: true });
    const { push, tenants, registry } = setup(
      failingFor('b', (attempt) => (attempt === 2 ? down : undefined)),
    );
    await push(1, 'full', [item('a'), item('b'), item('gone'), item('left')]);
    const second = [item('a', { pollIntervalMinutes: 30 }), item('b', { pollIntervalMinutes: 30 })];
    // b's write fails for Redis: the push is held, a written already, the tenants left out not disabled yet.
    await expect(push(2, 'full', second)).rejects.toBe(down);
    expect(await tenants.get('a')).toMatchObject({ generation: 2, defender: { pollIntervalMinutes: 30 } });
    // While the push is held, an administrator changes a.
    await registry.register(
      { tenantId: 'a', defender: registrationBody({ pollIntervalMinutes: 120 }) as never },
      { source: 'rest' },
    );
    expect(await push(2, 'full', second)).toMatchObject({ applied: 1, unchanged: 1, disabled: 2 });
    expect(await tenants.get('a')).toMatchObject({ source: 'rest', defender: { pollIntervalMinutes: 120 } });
    expect(await tenants.get('b')).toMatchObject({ generation: 2, defender: { pollIntervalMinutes: 30 } });
    // A newer generation is Director's again.
    expect(await push(3, 'full', second)).toMatchObject({ applied: 1, unchanged: 1 });
    expect(await tenants.get('a')).toMatchObject({
      source: 'director',
      defender: { pollIntervalMinutes: 30 },
    });
  });

  it('handle should keep a REST record written after a held push wrote the tenant, when Redis lost the time the push began', async () => {
    const down = new UrsError('STORE_DOWN', 'Redis refused the write', { infrastructure: true });
    const { push, tenants, registry, state } = setup(
      failingFor('b', (attempt) => (attempt === 2 ? down : undefined)),
    );
    await push(1, 'full', [item('a'), item('b')]);
    const second = [item('a', { pollIntervalMinutes: 30 }), item('b', { pollIntervalMinutes: 30 })];
    await expect(push(2, 'full', second)).rejects.toBe(down);
    await registry.register(
      { tenantId: 'a', defender: registrationBody({ pollIntervalMinutes: 120 }) as never },
      { source: 'rest' },
    );
    // Redis wiped while the push was held: its next handling counts as its first.
    state.pushStarted = async () => state.time();
    expect(await push(2, 'full', second)).toMatchObject({ applied: 1, unchanged: 1 });
    // a's record keeps generation 2: the administrator wrote it after this push did.
    expect(await tenants.get('a')).toMatchObject({ source: 'rest', defender: { pollIntervalMinutes: 120 } });
  });

  it('handle should disable a tenant an administrator edited over REST before a full push left it out, when that push comes again after leaving it enabled', async () => {
    const busy = new UrsError('TENANT_BUSY', 'tenant t is being written by another request; try again', {
      canRetry: true,
    });
    let held = false;
    const { push, tenants, registry, state, leftEnabledCount } = setup(
      failingFor('t', () => (held ? busy : undefined)),
    );
    await push(3, 'full', [item('t'), item('other')]);
    // An administrator rotates t's secret: its record is the administrator's, of Director's generation 3.
    await registry.register(
      { tenantId: 't', defender: registrationBody({ clientSecret: 'rotated~secret' }) as never },
      { source: 'rest' },
    );
    expect(await tenants.get('t')).toMatchObject({ source: 'rest', generation: 3, enabled: true });
    // Generation 9 leaves t out, and t stays held by another writer through every attempt: left enabled.
    held = true;
    expect(await push(9, 'full', [item('other')])).toMatchObject({ disabled: 0 });
    expect(leftEnabledCount()).toBe(1);
    expect(state.generation).toBe(9);
    // The registrar stops before committing it: generation 9 is delivered again, and disables t.
    held = false;
    expect(await push(9, 'full', [item('other')])).toMatchObject({ disabled: 1 });
    expect(await tenants.get('t')).toMatchObject({
      enabled: false,
      disabledReason: 'missing from Director full push 9',
    });
  });

  it('handle should keep what an administrator changed over REST, while a push held for a fault was waiting, of a tenant the push found unchanged', async () => {
    const down = new UrsError('STORE_DOWN', 'Redis refused the write', { infrastructure: true });
    const { push, tenants, registry } = setup(
      failingFor('b', (attempt) => (attempt === 2 ? down : undefined)),
    );
    await push(3, 'full', [item('t'), item('b')]);
    const seventh = [item('t'), item('b', { pollIntervalMinutes: 30 })];
    // t is unchanged (its record keeps generation 3); b's write fails for Redis: the push is held.
    await expect(push(7, 'full', seventh)).rejects.toBe(down);
    expect(await tenants.get('t')).toMatchObject({ source: 'director', generation: 3 });
    // While the push is held, an administrator changes t.
    await registry.register(
      { tenantId: 't', defender: registrationBody({ pollIntervalMinutes: 120 }) as never },
      { source: 'rest' },
    );
    expect(await push(7, 'full', seventh)).toMatchObject({ applied: 1, unchanged: 1 });
    expect(await tenants.get('t')).toMatchObject({
      source: 'rest',
      generation: 3,
      defender: { pollIntervalMinutes: 120 },
    });
    expect(await tenants.get('b')).toMatchObject({ generation: 7, defender: { pollIntervalMinutes: 30 } });
  });

  it('handle should try a busy tenant again within the push, and dead-letter it once it stays busy', async () => {
    const busy = () =>
      new UrsError('TENANT_BUSY', 'tenant b is being written by another request; try again', {
        canRetry: true,
      });
    const once = setup(failingFor('b', (attempt) => (attempt === 1 ? busy() : undefined)));
    expect(await once.push(1, 'full', [item('a'), item('b')])).toMatchObject({ applied: 2, failed: 0 });
    expect(once.letters()).toEqual([]);
    const always = setup(failingFor('b', busy));
    expect(await always.push(1, 'full', [item('a'), item('b')])).toMatchObject({ applied: 1, failed: 1 });
    expect(always.letters()).toMatchObject([{ key: 'b', error: { code: 'TENANT_BUSY' } }]);
    expect(always.state.generation).toBe(1);
  });

  it('handle should say a tenant whose lock lapsed once its record was sent is perhaps applied, not "not applied"', async () => {
    const { push, letters, tenants } = setup(
      failingFor('b', () => new TenantLockLostError('b', undefined, 'urs.tenants')),
    );
    expect(await push(1, 'full', [item('a'), item('b')])).toMatchObject({ applied: 1, failed: 1 });
    expect(letters()).toMatchObject([
      {
        key: 'b',
        error: {
          code: 'TENANT_LOCK_LOST',
          message: expect.stringMatching(/^tenants\[1\] perhaps applied: /),
        },
      },
    ]);
    expect((await tenants.getStatus('b')).registrationError?.message).toMatch(
      /^registration perhaps applied: /,
    );
    // Lost before its record was sent: not applied.
    const before = setup(failingFor('b', () => new TenantLockLostError('b')));
    await before.push(1, 'full', [item('a'), item('b')]);
    expect(before.letters()).toMatchObject([
      { key: 'b', error: { message: expect.stringMatching(/^tenants\[1\] not applied: /) } },
    ]);
  });

  it('handle should disable the other tenants a full push leaves out when one of them cannot be', async () => {
    const { push, tenants, state } = setup(
      failingFor('b', (attempt) =>
        attempt > 1
          ? new UrsError('TENANT_BUSY', 'tenant b is being written by another request; try again', {
              canRetry: true,
            })
          : undefined,
      ),
    );
    await push(1, 'full', [item('a'), item('b'), item('c')]);
    expect(await push(2, 'full', [])).toMatchObject({ disabled: 2 });
    expect((await tenants.get('a'))?.enabled).toBe(false);
    expect((await tenants.get('b'))?.enabled).toBe(true);
    expect((await tenants.get('c'))?.enabled).toBe(false);
    expect(state.generation).toBe(2);
  });

  it('handle should count each tenant a full push leaves out and leaves enabled, held by another writer through every attempt', async () => {
    const busy = () =>
      new UrsError('TENANT_BUSY', 'tenant b is being written by another request; try again', {
        canRetry: true,
      });
    // Busy once: the next attempt disables it, nothing counted.
    const once = setup(failingFor('b', (attempt) => (attempt === 2 ? busy() : undefined)));
    await once.push(1, 'full', [item('a'), item('b')]);
    expect(await once.push(2, 'full', [item('a')])).toMatchObject({ disabled: 1 });
    expect(once.leftEnabledCount()).toBe(0);
    // Busy through every attempt: left enabled, and counted.
    const always = setup(failingFor('b', (attempt) => (attempt > 1 ? busy() : undefined)));
    await always.push(1, 'full', [item('a'), item('b'), item('c')]);
    expect(always.leftEnabledCount()).toBe(0);
    expect(await always.push(2, 'full', [item('a')])).toMatchObject({ disabled: 1 });
    expect((await always.tenants.get('b'))?.enabled).toBe(true);
    expect(always.leftEnabledCount()).toBe(1);
    // The next full push that still cannot disable it counts it again: it is still enabled against Director.
    await always.push(3, 'full', [item('a')]);
    expect(always.leftEnabledCount()).toBe(2);
    // A delta push disables nobody, and counts nothing.
    await always.push(4, 'delta', [item('a')]);
    expect(always.leftEnabledCount()).toBe(2);
    // Not counted when it was not Director's to disable (only ever an administrator's) or was disabled already.
    for (const record of [{ source: 'rest' as const }, { enabled: false }]) {
      const other = setup(failingFor('b', (attempt) => (attempt > 1 ? busy() : undefined)));
      await other.push(1, 'full', [item('a'), item('b')]);
      const { generation, ...stored } = (await other.tenants.get('b')) as TenantRecord;
      const kept = record.source === 'rest' || generation === undefined ? {} : { generation };
      await other.tenants.put({ ...stored, ...kept, ...record, revision: stored.revision + 1 });
      await other.push(2, 'full', [item('a')]);
      expect([record, other.leftEnabledCount()]).toEqual([record, 0]);
    }
  });
});

import { toDeadLetter, type InboundMessage, type Publisher } from '@urs/bus';
import type { RegistrationPush, TenantRegistration } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { UrsError } from '@urs/resilience';
import type { RegistrarStateStore, TenantStore } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import type { TenantRegistry } from './registry';
import { forEachLimit } from './concurrency';
import { redactTenantPayload } from './dead-letter';
import {
  describeViolations,
  isTenantId,
  renameFields,
  validateRegistration,
  type Violation,
} from './validation';

/** A refused tenant of a push (its dead letter's error). Never carries a value, only fields and rules. */
export class RegistrationRejectedError extends UrsError {
  constructor(violations: Violation[]) {
    super('REGISTRATION_INVALID', `registration refused: ${describeViolations(violations)}`, {
      details: { violations },
    });
  }
}

/**
 * A refused entry's violations named from the push (`tenants[3].defender.clientId`, `tenants[3]` for an entry
 * that is no object): its dead letter and log line then say which entry, also when it has no tenant id.
 */
export function entryViolations(index: number, violations: Violation[]): Violation[] {
  const entry = `tenants[${index}]`;
  return renameFields(violations, (field) => (field === '(message)' ? entry : `${entry}.${field}`));
}

export interface RegistrationHandlerDeps {
  registry: TenantRegistry;
  tenants: TenantStore;
  state: RegistrarStateStore;
  publisher: Publisher;
  dlqTopic: string;
  /** Resolves once Redis holds every tenant of `urs.tenants` (the full-push diff reads Redis). */
  ensureRebuilt: () => Promise<void>;
  logger: Logger;
  /**
   * Counts the refused entries (`urs_registrations_refused_total`), once per tenant and generation: the push
   * itself is handled.
   */
  metrics: Registry;
  service?: string;
  /** Tenants written at once. Default 32. */
  concurrency?: number;
}

/** A refused entry of a push: where it is, its tenant when it names a valid one, and why. */
interface Refusal {
  index: number;
  item: unknown;
  known: string | null;
  violations: Violation[];
  /** `violations` named from the push (`entryViolations`). */
  inPush: Violation[];
}

export interface PushOutcome {
  applied: number;
  unchanged: number;
  rejected: number;
  disabled: number;
  ignored: boolean;
}

/** The dead letter's payload of an entry nested too deep to be written out as JSON (a few KB can be). */
const NESTED_TOO_DEEP = '[withheld: a tenant entry nested too deep to be written out]';

/** `item` as JSON text; undefined when it is nested too deep for `JSON.stringify`. */
function jsonOrUndefined(item: unknown): string | undefined {
  try {
    return JSON.stringify(item) ?? 'null';
  } catch {
    return undefined;
  }
}

/**
 * Handles Director's pushes from `urs.registration`. An older generation than the last applied is
 * ignored (and logged); the same generation again is applied again (a redelivery after a crash must
 * finish the work; unchanged tenants are not rewritten), except over tenants an administrator wrote
 * or deleted over REST since. Each tenant is validated on its own: a refused one goes to the
 * dead-letter topic (secret redacted) and into its status, the others are applied. A `full` push
 * disables the Director-registered tenants it leaves out — never deletes them — and ends the status of
 * those it leaves out that have no record, every registration of them refused. Tenants an administrator
 * registered over REST are not Director's to disable.
 */
export function createRegistrationHandler(deps: RegistrationHandlerDeps) {
  const log = deps.logger.child({ component: 'director' });
  const service = deps.service ?? 'registrar';
  const concurrency = deps.concurrency ?? 32;
  const refused = deps.metrics.counter(
    'urs_registrations_refused_total',
    "Director's tenant entries refused (dead-lettered, the tenant kept as it was), once per tenant and generation (a push handled again counts none again; an entry without a tenant id counts again only when its push's handling was cut before it finished): the push itself counts as handled.",
  );
  // Served at 0 from the start: UrsRegistrationsRefused counts its increase, which a first refusal alone
  // (the series appearing at 1) would not show.
  refused.init();
  /**
   * The highest generation this process applied. A rebuilt Redis learns the last applied generation from
   * the pushes before the group's committed offset; one applied here and not yet committed (offsets are
   * committed every second) is only known here until then.
   */
  let appliedHere = -1;

  /**
   * The refused entries' dead letters, in one send (the publisher splits it by size): a push of thousands
   * refused is not thousands of round trips to Kafka.
   */
  async function deadLetters(message: InboundMessage<RegistrationPush>, refusals: Refusal[]) {
    if (refusals.length === 0) return;
    const letters = refusals.map(({ item, known, inPush }) => {
      const text = jsonOrUndefined(item);
      const letter = toDeadLetter(
        {
          service,
          topic: message.topic,
          partition: message.partition,
          offset: message.offset,
          key: known === null ? null : Buffer.from(known, 'utf8'),
          value: text === undefined ? null : Buffer.from(text, 'utf8'),
        },
        new RegistrationRejectedError(inPush),
        // Only what the contract pins down: a secret may sit under a mistyped name (`clientSecert`).
        { redactPayload: redactTenantPayload },
      );
      const value = text === undefined ? { ...letter, payload: NESTED_TOO_DEEP } : letter;
      return { key: letter.sourceTopic, value };
    });
    await deps.publisher.send(deps.dlqTopic, 'urs/dead-letter', letters);
  }

  async function handle(message: InboundMessage<RegistrationPush>): Promise<PushOutcome> {
    const push = message.value;
    const outcome: PushOutcome = { applied: 0, unchanged: 0, rejected: 0, disabled: 0, ignored: false };
    if (push === null) return outcome;
    await deps.ensureRebuilt();
    const last = Math.max(await deps.state.lastGeneration(), appliedHere);
    if (push.generation < last) {
      log.warn('older Director generation ignored', {
        generation: push.generation,
        lastApplied: last,
        mode: push.mode,
      });
      return { ...outcome, ignored: true };
    }
    const origin = { source: 'director' as const, generation: push.generation };
    // The last applied generation again: a redelivery (the registrar stopped before committing it). What
    // an administrator changed over REST since it was applied stays, a tenant deleted stays deleted
    // (registerUnlessDeleted); the rest is applied again.
    const repeated = push.generation === last;
    const present = new Set<string>();
    // KafkaJS heartbeats only between messages, and only when asked: a push of thousands of tenants keeps
    // asking, or the group drops this member before the push is done and it comes back, to take as long
    // again. A failed heartbeat (a rebalance under way) does not fail the push: handling it again is safe.
    const heartbeat = async (): Promise<void> => {
      await message.heartbeat?.().catch(() => undefined);
    };
    // Validate everything first; of a tenant listed twice, the last entry counts.
    const accepted = new Map<string, TenantRegistration>();
    const refusals: Refusal[] = [];
    for (const [index, item] of push.tenants.entries()) {
      const tenantId = (item as { tenantId?: unknown } | null)?.tenantId;
      const validated = validateRegistration(item);
      if (validated.ok) {
        present.add(validated.registration.tenantId);
        accepted.set(validated.registration.tenantId, validated.registration);
        continue;
      }
      outcome.rejected++;
      const known = isTenantId(tenantId) ? tenantId : null;
      refusals.push({
        index,
        item,
        known,
        violations: validated.violations,
        inPush: entryViolations(index, validated.violations),
      });
      if (known !== null) {
        present.add(known);
        accepted.delete(known);
      }
    }
    // Written each time the push is handled: a push handled again writes its dead letters again.
    await deadLetters(message, refusals);
    await heartbeat();
    // Tenants concurrently, the refused entries of one tenant in their order (its last one stays in its status).
    const byTenant = new Map<string, Refusal[]>();
    for (const refusal of refusals) {
      const key = refusal.known ?? `#${refusal.index}`;
      const ofTenant = byTenant.get(key);
      if (ofTenant) ofTenant.push(refusal);
      else byTenant.set(key, [refusal]);
    }
    await forEachLimit([...byTenant.values()], concurrency, async (ofTenant) => {
      for (const { index, known, violations, inPush } of ofTenant) {
        // Present but refused: its earlier record stays as it was (not disabled), the status says why,
        // unless the entry would not have applied to the tenant (see `keepRestRecord`).
        const recorded =
          known === null
            ? 'not-recorded'
            : await deps.registry.reject(known, violations, origin, { keepRestRecord: repeated });
        // Counted once per tenant and generation, so that the alert's increase() does not fire on a push
        // handled again (redelivered after a rebalance, or a restart before its offset was committed): the
        // status tells whether this generation's refusal of the tenant is recorded already. An entry the
        // status leaves alone would not have applied: its generation was applied before, and counted then.
        // An entry without a tenant id has no status: counted when its generation is newer than the last
        // applied.
        if (recorded === 'recorded' || (known === null && !repeated)) refused.inc();
        log.warn('tenant registration refused', {
          tenantId: known,
          index,
          generation: push.generation,
          inStatus: recorded !== 'not-recorded',
          reason: describeViolations(inPush),
        });
      }
      await heartbeat();
    });
    // Tenants are independent: written concurrently.
    await forEachLimit([...accepted.values()], concurrency, async (registration) => {
      const { changed } = await deps.registry.registerUnlessDeleted(registration, origin, {
        skipIfUnchanged: true,
        keepRestRecord: repeated,
      });
      if (changed) outcome.applied++;
      else outcome.unchanged++;
      await heartbeat();
    });
    if (push.mode === 'full') {
      const missing = (await deps.tenants.ids()).filter((tenantId) => !present.has(tenantId));
      await forEachLimit(missing, concurrency, async (tenantId) => {
        // Checked under the tenant's write lock: an administrator's PUT meanwhile makes it theirs. Theirs, it
        // stays enabled; a refusal of Director's in its status ends all the same.
        const disabled = await deps.registry.disable(
          tenantId,
          `missing from Director full push ${push.generation}`,
          origin,
          (record) => record.source === 'director',
        );
        if (disabled) outcome.disabled++;
        await heartbeat();
      });
      // The tenants whose every registration was refused have no record, so the diff above does not see
      // them: the push leaving them out ends their refused status, as it clears a disabled tenant's.
      const refusedOnly = (await deps.tenants.refusedIds()).filter((tenantId) => !present.has(tenantId));
      await forEachLimit(refusedOnly, concurrency, async (tenantId) => {
        await deps.registry.endRefusal(tenantId, origin);
        await heartbeat();
      });
    }
    await deps.state.observeGeneration(push.generation);
    appliedHere = Math.max(appliedHere, push.generation);
    log.info('Director push applied', {
      generation: push.generation,
      mode: push.mode,
      tenants: push.tenants.length,
      ...outcome,
    });
    return outcome;
  }

  return {
    handle,
    /** The bus handler. */
    handler: async (message: InboundMessage<RegistrationPush>): Promise<void> => {
      await handle(message);
    },
  };
}

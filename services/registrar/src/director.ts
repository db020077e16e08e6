import { isKafkaRecordRefusal, toDeadLetter, type InboundMessage, type Publisher } from '@urs/bus';
import type { RegistrationPush, TenantRecord, TenantRegistration } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import {
  UrsError,
  canRetry,
  errorCode,
  errorMessage,
  isInfrastructureFault,
  isUrsError,
} from '@urs/resilience';
import type { RegistrarStateStore, TenantStore } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import { restRecordKept, type RefusalRecord } from './refusals';
import type { TenantRegistry } from './registry';
import { forEachLimit } from './concurrency';
import { redactTenantPayload } from './dead-letter';
import { isTenantContention, notApplied } from './tenant-lock';
import {
  describeViolations,
  isTenantId,
  renameFields,
  validateRegistration,
  type Violation,
} from './validation';

/**
 * A refused tenant of a push (its dead letter's error). Never carries a value, only fields and rules.
 * `replacedBy`: the index of a later valid entry of the same tenant that counts in its place.
 */
export class RegistrationRejectedError extends UrsError {
  constructor(violations: Violation[], replacedBy?: number) {
    const replaced = replacedBy === undefined ? '' : `, replaced by tenants[${replacedBy}] of the same push`;
    super('REGISTRATION_INVALID', `registration refused${replaced}: ${describeViolations(violations)}`, {
      details: { violations, ...(replacedBy === undefined ? {} : { replacedBy }) },
    });
  }
}

/**
 * A valid entry of a push whose write failed for the tenant's own reason (its dead letter's error): the
 * failure's code and message, the entry named from the push.
 */
export class RegistrationFailedError extends UrsError {
  constructor(index: number, error: unknown) {
    super(errorCode(error), `tenants[${index}] ${notApplied(error)}: ${errorMessage(error)}`, {
      canRetry: canRetry(error),
    });
  }
}

/**
 * How many times a push writes a tenant that another writer holds (`TENANT_BUSY`: its lock held past the
 * 20 s wait; `TENANT_LOCK_LOST`): a REST write or a re-seal of the tenant under way ends within moments, so
 * the tenant is tried again within the push, up to a minute in all, while the push's other tenants go on.
 * Still held after that, it is the tenant's failure (dead-lettered, in its status): holding the whole push
 * for one tenant would delay every other tenant of it.
 */
export const TENANT_ATTEMPTS = 3;

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
   * itself is handled; and the tenants a full push left out and could not disable
   * (`urs_full_push_tenants_left_enabled_total`).
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
  /** Entries refused (dead-lettered `REGISTRATION_INVALID`), those a later valid entry replaces too. */
  rejected: number;
  /** Valid entries whose write failed for the tenant's own reason: dead-lettered, in their status. */
  failed: number;
  disabled: number;
  ignored: boolean;
}

/** An entry of a push dead-lettered: its tenant when it names a valid one, and the error its letter carries. */
interface Letter {
  item: unknown;
  known: string | null;
  error: UrsError;
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
/**
 * Whether Director has registered the tenant (any generation): its last write, or one before a REST write
 * (which keeps Director's generation on the record). A tenant only ever registered over REST has none.
 */
function registeredByDirector(record: TenantRecord): boolean {
  return record.source === 'director' || record.generation !== undefined;
}

/**
 * Whether a failure of one tenant's step is the tenant's own (its secret not sealed, another writer holding
 * it, its record refused as too large): the project's own errors that are no fault of Redis or Kafka, and
 * Kafka refusing that one record. Anything else is not the tenant's.
 */
function isTenantsOwn(error: unknown): boolean {
  if (isInfrastructureFault(error)) return false;
  if (isUrsError(error)) return true;
  // Kafka's refusal of one record for what it holds (too large, invalid): the tenant's, not the topic's. The
  // publisher says it as RECORD_TOO_LARGE or RECORD_REFUSED (an error of ours); as Kafka answered it, too.
  return isKafkaRecordRefusal(error);
}

export function createRegistrationHandler(deps: RegistrationHandlerDeps) {
  const log = deps.logger.child({ component: 'director' });
  const service = deps.service ?? 'registrar';
  const concurrency = deps.concurrency ?? 32;
  const refused = deps.metrics.counter(
    'urs_registrations_refused_total',
    "Director's tenant entries refused, or failed for the tenant's own reason (dead-lettered, the tenant kept as it was), once per tenant and generation (a push handled again counts none again; an entry without a tenant id counts again only when its push's handling was cut before it finished): the push itself counts as handled.",
  );
  // Served at 0 from the start: UrsRegistrationsRefused counts its increase, which a first refusal alone
  // (the series appearing at 1) would not show.
  refused.init();
  const leftEnabled = deps.metrics.counter(
    'urs_full_push_tenants_left_enabled_total',
    "Director's enabled tenants a full push left out and could not disable (held by another writer through every attempt, or failed for the tenant's own reason): each stays enabled until a later full push disables it. Counted each time a full push's handling leaves one enabled.",
  );
  // Served at 0 from the start, as `refused`: UrsTenantsLeftEnabled counts its increase.
  leftEnabled.init();
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
  async function deadLetters(message: InboundMessage<RegistrationPush>, entries: Letter[]) {
    if (entries.length === 0) return;
    const letters = entries.map(({ item, known, error }) => {
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
        error,
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
    const outcome: PushOutcome = {
      applied: 0,
      unchanged: 0,
      rejected: 0,
      failed: 0,
      disabled: 0,
      ignored: false,
    };
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
    // A push handled again (held midway for a fault, or delivered again after its registrar stopped before
    // committing it) leaves as they are the records an administrator wrote over REST since it was first
    // handled (`restRecordKept`), and a tenant deleted stays deleted (registerUnlessDeleted); the rest is
    // applied again, as its first handling would have. When it began is Redis's time, as the records'
    // `updatedAt` is: one clock, whichever replicas handled the push and wrote the records.
    const origin = {
      source: 'director' as const,
      generation: push.generation,
      pushStartedAt: await deps.state.pushStarted(push.generation),
    };
    // The last applied generation again: a redelivery.
    const repeated = push.generation === last;
    /**
     * Whether a `full` push leaving the tenant out disables it: Director registered it, and no administrator
     * wrote it over REST since this push was first handled (`restRecordKept`: enabled again after this push
     * disabled it, then the push came again).
     */
    const toDisable = (record: TenantRecord): boolean =>
      registeredByDirector(record) && !restRecordKept(record, origin);
    const present = new Set<string>();
    // KafkaJS heartbeats only between messages, and only when asked: a push of thousands of tenants keeps
    // asking, or the group drops this member before the push is done and it comes back, to take as long
    // again. A failed heartbeat (a rebalance under way) does not fail the push: handling it again is safe.
    const heartbeat = async (): Promise<void> => {
      await message.heartbeat?.().catch(() => undefined);
    };
    /**
     * One tenant's step of the push, its failure kept to the tenant: the push goes on with the others. A fault
     * of Redis or Kafka (`isInfrastructureFault`) is no tenant's: it is thrown, and the push is held and
     * handled again once they are back (a tenant written already is unchanged then). So is any failure once
     * the runner gave the push up (stopping, its partition gone): whoever handles it next does it all again.
     * Another writer holding the tenant is waited out up to `TENANT_ATTEMPTS` times. Only the tenant's own
     * failures (`isTenantsOwn`) stay the tenant's; any other (Kafka refusing the topic itself, a defect) holds
     * the push too, rather than dead-letter every tenant of it.
     */
    const ofTenant = async <T>(
      tenantId: string,
      work: () => Promise<T>,
    ): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> => {
      for (let attempt = 1; ; attempt++) {
        try {
          return { ok: true, value: await work() };
        } catch (error) {
          if (!isTenantsOwn(error) || message.signal?.aborted) throw error;
          if (attempt >= TENANT_ATTEMPTS || !isTenantContention(error)) return { ok: false, error };
          log.warn('tenant held by another writer: trying it again within the push', {
            tenantId,
            generation: push.generation,
            attempt,
            code: errorCode(error),
          });
          await heartbeat();
        }
      }
    };
    /** A tenant a step of the push left as it was, for its own failure. */
    const leftAsItWas = (tenantId: string, what: string, error: unknown): void => {
      log.warn(what, {
        tenantId,
        generation: push.generation,
        code: errorCode(error),
        reason: errorMessage(error),
      });
    };
    // Validate everything first; of a tenant listed twice, the last entry counts.
    const accepted = new Map<string, TenantRegistration>();
    /** Where each accepted tenant's entry is in the push: the dead letter of one whose write fails. */
    const entries = new Map<string, { index: number; item: unknown }>();
    const refusals: Refusal[] = [];
    for (const [index, item] of push.tenants.entries()) {
      const tenantId = (item as { tenantId?: unknown } | null)?.tenantId;
      const validated = validateRegistration(item);
      if (validated.ok) {
        present.add(validated.registration.tenantId);
        accepted.set(validated.registration.tenantId, validated.registration);
        entries.set(validated.registration.tenantId, { index, item });
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
    /** The later valid entry of the same tenant that counts in place of a refused one: the tenant's last. */
    const replacing = (known: string | null): number | undefined =>
      known !== null && accepted.has(known) ? entries.get(known)?.index : undefined;
    // Written each time the push is handled: a push handled again writes its dead letters again.
    await deadLetters(
      message,
      refusals.map(({ item, known, inPush }) => ({
        item,
        known,
        error: new RegistrationRejectedError(inPush, replacing(known)),
      })),
    );
    await heartbeat();
    // Tenants concurrently, the refused entries of one tenant in their order (its last one stays in its status).
    // One that a later valid entry replaces is only dead-lettered and logged: the tenant is registered as that
    // entry says, so its status does not take the refusal, nor does the count.
    const byTenant = new Map<string, Refusal[]>();
    for (const refusal of refusals) {
      const replacedBy = replacing(refusal.known);
      if (replacedBy !== undefined) {
        log.warn('tenant registration refused and replaced by a later entry of the push', {
          tenantId: refusal.known,
          index: refusal.index,
          replacedBy,
          generation: push.generation,
          reason: describeViolations(refusal.inPush),
        });
        continue;
      }
      const key = refusal.known ?? `#${refusal.index}`;
      const ofTenant = byTenant.get(key);
      if (ofTenant) ofTenant.push(refusal);
      else byTenant.set(key, [refusal]);
    }
    // A task throws only what holds the push (`ofTenant`): `forEachLimit` then starts no other tenant.
    await forEachLimit([...byTenant.values()], concurrency, async (ofThisTenant) => {
      for (const { index, known, violations, inPush } of ofThisTenant) {
        // Present but refused: its earlier record stays as it was (not disabled), the status says why,
        // unless the entry would not have applied to the tenant (see `restRecordKept`).
        let recorded: RefusalRecord = 'not-recorded';
        if (known !== null) {
          const result = await ofTenant(known, () => deps.registry.reject(known, violations, origin));
          if (result.ok) recorded = result.value;
          else leftAsItWas(known, 'refusal not recorded in the tenant status', result.error);
        }
        // Counted once per tenant and generation, so that the alert's increase() does not fire on a push
        // handled again (redelivered after a rebalance, or a restart before its offset was committed): the
        // status tells whether this generation's refusal of the tenant is recorded already. An entry the
        // status leaves alone would not have applied: what an administrator changed since the push began stands.
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
    // Tenants are independent: written concurrently. One whose write fails for its own reason is handled as
    // a refused entry (dead-lettered, in its status), and the push goes on: one tenant never holds the others.
    const failures: { tenantId: string; index: number; item: unknown; error: unknown }[] = [];
    await forEachLimit([...accepted.values()], concurrency, async (registration) => {
      const { tenantId } = registration;
      const result = await ofTenant(tenantId, () =>
        deps.registry.registerUnlessDeleted(registration, origin, { skipIfUnchanged: true }),
      );
      if (!result.ok) {
        outcome.failed++;
        const entry = entries.get(tenantId) as { index: number; item: unknown };
        failures.push({ tenantId, ...entry, error: result.error });
      } else if (result.value.changed) outcome.applied++;
      else outcome.unchanged++;
      await heartbeat();
    });
    await deadLetters(
      message,
      failures.map(({ tenantId, index, item, error }) => ({
        item,
        known: tenantId,
        error: new RegistrationFailedError(index, error),
      })),
    );
    await forEachLimit(failures, concurrency, async ({ tenantId, index, error }) => {
      // Its earlier record stays as it was, as a refused entry's does; the status says why. A tenant still
      // held by another writer may not take this either: the dead letter and the log line then say it.
      const failure = {
        code: errorCode(error),
        message: `registration ${notApplied(error)}: ${errorMessage(error)}`,
      };
      const result = await ofTenant(tenantId, () => deps.registry.reject(tenantId, failure, origin));
      if (result.ok && result.value === 'recorded') refused.inc();
      log.warn('tenant registration failed', {
        tenantId,
        index,
        generation: push.generation,
        inStatus: result.ok && result.value !== 'not-recorded',
        code: failure.code,
        reason: errorMessage(error),
      });
      await heartbeat();
    });
    if (push.mode === 'full') {
      const missing = (await deps.tenants.ids()).filter((tenantId) => !present.has(tenantId));
      await forEachLimit(missing, concurrency, async (tenantId) => {
        // Checked under the tenant's write lock. A tenant Director registered is disabled whatever wrote it
        // last (an administrator's secret rotation must not keep an offboarded customer polled), unless an
        // administrator wrote it over REST since this push was first handled (`toDisable`); one only ever
        // registered over REST stays enabled, and a refusal of Director's in its status ends all the same.
        // One that cannot be disabled (held by another writer past every attempt) stays enabled until the
        // next full push.
        const result = await ofTenant(tenantId, () =>
          deps.registry.disable(
            tenantId,
            `missing from Director full push ${push.generation}`,
            origin,
            toDisable,
          ),
        );
        if (!result.ok) {
          leftAsItWas(tenantId, 'tenant missing from a full push not disabled', result.error);
          // Counted when it was Director's to disable and is enabled, as the disable would have found it.
          const record = await deps.tenants.get(tenantId);
          if (record && toDisable(record) && record.enabled) leftEnabled.inc();
        } else if (result.value) outcome.disabled++;
        await heartbeat();
      });
      // The tenants whose every registration was refused have no record, so the diff above does not see
      // them: the push leaving them out ends their refused status, as it clears a disabled tenant's.
      const refusedOnly = (await deps.tenants.refusedIds()).filter((tenantId) => !present.has(tenantId));
      await forEachLimit(refusedOnly, concurrency, async (tenantId) => {
        const result = await ofTenant(tenantId, () => deps.registry.endRefusal(tenantId, origin));
        if (!result.ok)
          leftAsItWas(
            tenantId,
            'refused status of a tenant missing from a full push not ended',
            result.error,
          );
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

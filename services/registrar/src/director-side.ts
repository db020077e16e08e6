import type { Kafka } from 'kafkajs';
import type { Publisher } from '@urs/bus';
import type { Logger } from '@urs/logging';
import { UrsError, canRetry, errorMessage } from '@urs/resilience';
import { checkSecretKey, type KeyFingerprints, type SecretKeyCheck, type SecretSealer } from '@urs/secrets';
import type { RegistrarStateStore, TenantStore } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import { createRegistrationHandler } from './director';
import { createTenantRebuilder, readHandledGeneration, readTenantLog, type TenantRebuilder } from './rebuild';
import { createTenantRegistry, type TenantRegistry, type TenantRegistryDeps } from './registry';

export interface DirectorSideDeps {
  kafka: Kafka;
  publisher: Publisher;
  tenants: TenantStore;
  state: RegistrarStateStore;
  sealer: SecretSealer;
  /** The key ids `sealer` holds (URS_SECRET_KEY_ID and URS_SECRET_KEYS_PREVIOUS): what `ready` checks. */
  keyIds: ReadonlySet<string>;
  /** The key ids' fingerprints (checkSecretKey): a new active key no stored secret uses is proven by them. */
  fingerprints?: KeyFingerprints;
  schedules: TenantRegistryDeps['schedules'];
  topics: { registration: string; tenants: string; dlq: string };
  /** The registrar's consumer group: the rebuild reads the registration topic's offsets it committed. */
  groupId: string;
  logger: Logger;
  metrics: Registry;
  /** How long the rebuild may take to read `urs.tenants`, and the handled generation, ms. Default 120000 each. */
  readTimeoutMs?: number;
  /**
   * The registrar's stop: a read of `urs.tenants` under way (the rebuild's, the catch-up's) is cut rather than
   * waited out, failing retryably (a push waiting on it is held for the next registrar).
   */
  signal?: AbortSignal;
}

export interface DirectorSide {
  /** Writes tenants: Director's pushes and the REST API alike. */
  registry: TenantRegistry;
  /** Refills a wiped Redis from `urs.tenants` before anything reads it. */
  rebuilder: TenantRebuilder;
  /**
   * Resolves once Redis holds the tenants of `urs.tenants` (`rebuilder.ensure`) and, the first time, once
   * URS_SECRET_KEY opened the stored secrets (checkSecretKey): rejects with its ConfigError when it does
   * not. What the first rebuild at start awaits (the watch), and every route and push before it writes.
   */
  ready: () => Promise<void>;
  /**
   * Whether `ready` has succeeded once: until then Redis may not hold the tenants of `urs.tenants` (Kafka
   * away at start), and the REST API answers what depends on them 503 at once rather than wait on Kafka.
   */
  isRebuilt: () => boolean;
  /**
   * Whether the active key is proven right (after `ready`): a stored secret sealed with it opened at the
   * check, or its fingerprint, written by a poller or vuln-fetcher holding it, matches. The re-sealer seals
   * with nothing else: a mistyped new key would make every tenant's secret unreadable to the other stages.
   */
  activeKeyProven: () => Promise<boolean>;
  /**
   * Redis caught up with `urs.tenants`: what this registrar sent and Redis failed to take since written again
   * (`registry.catchUpPending`), then, once per process, the topic read and what Redis is behind on written
   * back (`rebuilder.catchUp`: a registrar killed between its send to Kafka and its write to Redis). The read is
   * started, not awaited (one at a time; a failure is logged, and the next check starts it again): a read that
   * hangs or fails (Kafka away) leaves the first to run at every check all the same. What the registrar's watch
   * runs after `ready`, at start and every URS_REBUILD_CHECK_MS. Director's pushes wait for the read (they are
   * compared with Redis); readiness and the REST API do not. Await `rebuilder.catchUp()` for the read. Each
   * sets `urs_registrar_tenants_behind` to the entries still to store.
   */
  catchUp: () => Promise<void>;
  /**
   * Resolves once the read of `urs.tenants` a `catchUp` started, and the writes to Redis it led to, are done (at
   * once when none is under way; never rejects): what the registrar's stop awaits before Redis closes.
   */
  readSettled: () => Promise<void>;
  /** The bus handler of Director's pushes on the registration topic. */
  handler: ReturnType<typeof createRegistrationHandler>['handler'];
}

/**
 * The registrar's Director side, its three parts wired to one another: the registry, the rebuilder that reads
 * `urs.tenants` and the generation of the last push the group handled, and the handler of pushes, which waits
 * for the rebuild before it diffs a push against Redis. main.ts and the integration tests build it alike.
 */
export function createDirectorSide(deps: DirectorSideDeps): DirectorSide {
  const { kafka, publisher, tenants, state, topics, groupId, logger } = deps;
  const registry = createTenantRegistry({
    tenants,
    state,
    publisher,
    tenantsTopic: topics.tenants,
    sealer: deps.sealer,
    activeKeyProven: () => activeKeyProvenSoFar(),
    schedules: deps.schedules,
    logger,
  });
  // Unset until the first check counted: a 0 before then would say nothing is behind.
  const behind = deps.metrics.gauge(
    'urs_registrar_tenants_behind',
    'Entries of urs.tenants (records, deletions) this registrar sent or found and has not stored in Redis yet, as of its last catch-up: above 0 for long, pollers and Redis disagree on those tenants.',
  );
  const rebuilder = createTenantRebuilder({
    readLog: () =>
      readTenantLog(kafka, topics.tenants, groupId, logger, deps.readTimeoutMs, deps.signal).catch(
        (error: unknown) => {
          if (!deps.signal?.aborted) throw error;
          throw new UrsError('REGISTRAR_STOPPING', 'the registrar is stopping: urs.tenants not read', {
            canRetry: true,
            infrastructure: true,
            cause: error,
          });
        },
      ),
    readGeneration: () =>
      readHandledGeneration(kafka, topics.registration, groupId, logger, deps.readTimeoutMs),
    tenants,
    state,
    logger,
    catchUp: async (entries) => {
      const result = await registry.catchUp(entries);
      behind.set(result.pending);
      return result;
    },
  });

  // Redis as it is at setup may hold nothing to try (after a wipe, until the rebuild refilled it), and a
  // registrar with the wrong key would seal new secrets no poller or vuln-fetcher can open. So the key is
  // checked once the first rebuild finished, before anything is sealed: by the start's first rebuild, and by
  // a push the consumer handles meanwhile. Once: the key does not change.
  let keyChecked: Promise<SecretKeyCheck> | undefined;
  let rebuilt = false;
  async function ready(): Promise<void> {
    await rebuilder.ensure();
    keyChecked ??= checkSecretKey({
      sealer: deps.sealer,
      tenants,
      keyIds: deps.keyIds,
      logger,
      ...(deps.fingerprints === undefined ? {} : { fingerprints: deps.fingerprints }),
    }).catch((error: unknown) => {
      // A Redis outage is tried again by the next caller; a refused key stays refused.
      if (canRetry(error)) keyChecked = undefined;
      throw error;
    });
    await keyChecked;
    rebuilt = true;
  }

  async function activeKeyProven(): Promise<boolean> {
    await ready();
    return activeKeyProvenSoFar();
  }

  /** `activeKeyProven` without waiting for `ready`: what the registry asks under a tenant's lock. */
  async function activeKeyProvenSoFar(): Promise<boolean> {
    const active = deps.sealer.activeKeyId;
    if ((await keyChecked?.catch(() => undefined))?.proven.has(active)) return true;
    // Rolled out before the stages that claim a new key's fingerprint: proven once one of them did.
    const stored = await deps.fingerprints?.get(active);
    return stored === deps.sealer.fingerprint(active);
  }

  const director = createRegistrationHandler({
    registry,
    tenants,
    state,
    publisher,
    dlqTopic: topics.dlq,
    // A refused key stops the registrar (its start fails on it): the push waiting for it is held for the
    // next registrar, never dead-lettered for it. The catch-up's failures are retryable (`rebuilder.catchUp`).
    ensureRebuilt: () =>
      ready()
        .then(() => rebuilder.catchUp())
        .catch((error: unknown) => {
          if (canRetry(error)) throw error;
          throw new UrsError(
            'SECRET_KEY_REFUSED',
            'the registrar is stopping: its URS_SECRET_KEY was refused',
            {
              canRetry: true,
              infrastructure: true,
              cause: error,
            },
          );
        }),
    logger,
    metrics: deps.metrics,
  });
  /** The read of `urs.tenants` (and its catch-up) a `catchUp` started, while under way. */
  let reading: Promise<void> | undefined;
  return {
    registry,
    rebuilder,
    ready,
    isRebuilt: () => rebuilt,
    activeKeyProven,
    async catchUp() {
      behind.set((await registry.catchUpPending()).pending);
      // Started, not awaited: with Kafka away the read takes its timeout to fail, and the next check's
      // `catchUpPending` must not wait for it. One at a time (`rebuilder.catchUp` is single-flight); one that
      // failed is started again by the next check.
      reading ??= rebuilder
        .catchUp()
        .catch((error: unknown) => {
          if (deps.signal?.aborted) return;
          logger.warn('urs.tenants not read for the catch-up; read again at the next check', {
            reason: errorMessage(error),
          });
        })
        .finally(() => {
          reading = undefined;
        });
    },
    async readSettled() {
      await reading;
    },
    handler: director.handler,
  };
}

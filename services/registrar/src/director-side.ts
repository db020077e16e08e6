import type { Kafka } from 'kafkajs';
import type { Publisher } from '@urs/bus';
import type { Logger } from '@urs/logging';
import type { SecretSealer } from '@urs/secrets';
import type { RegistrarStateStore, TenantStore } from '@urs/store';
import { createRegistrationHandler } from './director';
import { createTenantRebuilder, readHandledGeneration, readTenantLog, type TenantRebuilder } from './rebuild';
import { createTenantRegistry, type TenantRegistry, type TenantRegistryDeps } from './registry';

export interface DirectorSideDeps {
  kafka: Kafka;
  publisher: Publisher;
  tenants: TenantStore;
  state: RegistrarStateStore;
  sealer: SecretSealer;
  schedules: TenantRegistryDeps['schedules'];
  topics: { registration: string; tenants: string; dlq: string };
  /** The registrar's consumer group: the rebuild reads the registration topic's offsets it committed. */
  groupId: string;
  logger: Logger;
  /** How long the rebuild may take to read `urs.tenants`, and the handled generation, ms. Default 120000 each. */
  readTimeoutMs?: number;
}

export interface DirectorSide {
  /** Writes tenants: Director's pushes and the REST API alike. */
  registry: TenantRegistry;
  /** Refills a wiped Redis from `urs.tenants` before anything reads it. */
  rebuilder: TenantRebuilder;
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
    schedules: deps.schedules,
    logger,
  });
  const rebuilder = createTenantRebuilder({
    readLog: () => readTenantLog(kafka, topics.tenants, groupId, logger, deps.readTimeoutMs),
    readGeneration: () =>
      readHandledGeneration(kafka, topics.registration, groupId, logger, deps.readTimeoutMs),
    tenants,
    state,
    logger,
  });
  const director = createRegistrationHandler({
    registry,
    tenants,
    state,
    publisher,
    dlqTopic: topics.dlq,
    ensureRebuilt: () => rebuilder.ensure(),
    logger,
  });
  return { registry, rebuilder, handler: director.handler };
}

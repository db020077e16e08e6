import type { Admin, Kafka } from 'kafkajs';
import type { KafkaConfig } from '@urs/config';
import type { Logger } from '@urs/logging';
import { createKafka } from './kafka';

/**
 * One client of no retries per seed broker (KafkaConfig.brokers), in their order, each knowing that broker
 * alone: for a caller that retries on its own and must be able to stop (a wait for Kafka), see
 * connectAdminThroughSeeds. A KafkaJS client given every seed connects through one of them per try and moves
 * to the next only on its own retry, so with no retries every try went to the same seed (the first, as each
 * admin starts the list anew): one seed away failed each try while the others answered. Once connected, a
 * client reaches the cluster's brokers from the seed's metadata, whichever seed that was.
 */
export function seedClients(config: KafkaConfig, logger: Logger): Kafka[] {
  return config.brokers.map((seed) => createKafka({ ...config, brokers: [seed] }, logger, { retries: 0 }));
}

/** The seed brokers in their order, from the one at `first` on, then those before it. */
export function seedsFrom(brokers: readonly string[], first: number): string[] {
  return [...brokers.slice(first), ...brokers.slice(0, first)];
}

/**
 * Connects an admin through the first of `clients` that answers, each tried once in turn (a client of
 * seedClients), and says which one (its index). An admin whose connect failed is disconnected. When none
 * answers, the last failure is thrown; an abort of `signal` between two tries throws that failure at once,
 * without trying the next seed.
 */
export async function connectAdminThroughSeeds(
  clients: readonly Pick<Kafka, 'admin'>[],
  signal?: AbortSignal,
): Promise<{ admin: Admin; seed: number }> {
  let failure: unknown = new Error('no Kafka seed broker to connect to');
  for (const [seed, client] of clients.entries()) {
    if (signal?.aborted) break;
    const admin = client.admin();
    try {
      await admin.connect();
      return { admin, seed };
    } catch (error) {
      failure = error;
      await admin.disconnect().catch(() => undefined);
    }
  }
  throw failure;
}

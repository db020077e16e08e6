import type { ChainableCommander } from 'ioredis';

/**
 * Runs a pipeline or a transaction and answers its commands' replies in order, or rejects with the first error
 * Redis gave one of them (OOM, READONLY: a transaction has no rollback, so a step it refused fails the caller
 * as a whole). A transaction Redis discarded answers none.
 */
export async function replies(commands: ChainableCommander): Promise<unknown[]> {
  const results = (await commands.exec()) ?? [];
  for (const [error] of results) if (error) throw error;
  return results.map(([, reply]) => reply);
}

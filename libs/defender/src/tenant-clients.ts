/** What the cache keeps per tenant: anything that must be closed once let go of (a Defender client). */
export interface Closable {
  close(): void;
}

export interface TenantClientCacheOptions {
  /** A tenant's client is let go of after this long without being asked for, ms. Default an hour. */
  idleMs?: number;
  /** Most tenants whose client is kept; past it the one asked for least recently goes. Default 10000. */
  maxTenants?: number;
  now?: () => number;
}

/**
 * One client per tenant, kept while the tenant's `version` stays the same (its record's revision: its
 * credentials and secret are that record's), so its token is reused across calls, cycles and retries instead
 * of asking Entra for a new one each time.
 */
export interface TenantClientCache<C extends Closable> {
  /**
   * The tenant's client of this `version`: the one kept, or one `make` builds in place of an older one. `make`
   * is handed the client it replaces (closed already), to take over what outlives a client (its call health).
   */
  get(tenantId: string, version: number, make: (replaced: C | undefined) => C): C;
  /** Closes and forgets the tenant's client (the tenant was deleted or disabled): its secret leaves memory. */
  forget(tenantId: string): void;
  /** How many tenants have a client now. */
  size(): number;
  /** Closes every client. */
  close(): void;
}

/**
 * A TenantClientCache bounded in memory twice over: a client no one asked for within `idleMs` (about a
 * token's life, after which it holds nothing worth keeping) is let go of, with its secret, so a deleted or
 * disabled tenant's secret does not stay until a restart; and at most `maxTenants` are kept, the least
 * recently used going first.
 */
export function createTenantClientCache<C extends Closable>(
  options: TenantClientCacheOptions = {},
): TenantClientCache<C> {
  const idleMs = options.idleMs ?? 60 * 60_000;
  const maxTenants = options.maxTenants ?? 10_000;
  const now = options.now ?? Date.now;
  // In order of last use (a use moves its tenant to the end), so the first entry is the least recently used.
  const clients = new Map<string, { version: number; client: C; usedAt: number }>();
  let sweptAt = now();

  /** Lets idle clients go, at most once per tenth of `idleMs` (a walk over every tenant's client). */
  function sweep(at: number): void {
    if (at - sweptAt < idleMs / 10) return;
    sweptAt = at;
    for (const [tenantId, entry] of clients) {
      if (at - entry.usedAt <= idleMs) continue;
      entry.client.close();
      clients.delete(tenantId);
    }
  }

  function forget(tenantId: string): void {
    clients.get(tenantId)?.client.close();
    clients.delete(tenantId);
  }

  return {
    get(tenantId, version, make) {
      const at = now();
      sweep(at);
      const cached = clients.get(tenantId);
      clients.delete(tenantId);
      if (cached && cached.version === version) {
        clients.set(tenantId, { ...cached, usedAt: at });
        return cached.client;
      }
      cached?.client.close();
      const client = make(cached?.client);
      clients.set(tenantId, { version, client, usedAt: at });
      if (clients.size > maxTenants) {
        const oldest = clients.keys().next().value;
        if (oldest !== undefined) forget(oldest);
      }
      return client;
    },
    forget,
    size: () => clients.size,
    close() {
      for (const { client } of clients.values()) client.close();
      clients.clear();
    },
  };
}

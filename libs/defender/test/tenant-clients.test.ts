import { createTenantClientCache } from '../src/tenant-clients';

/** A client that counts its closes. */
function counted(closed: string[], name: string) {
  return { name, close: () => void closed.push(name) };
}

describe('createTenantClientCache', () => {
  it('should keep a tenant client while its version holds, and replace it (closing the old) when it changes', () => {
    const closed: string[] = [];
    const cache = createTenantClientCache<ReturnType<typeof counted>>();
    const first = cache.get('a', 1, () => counted(closed, 'a1'));
    expect(cache.get('a', 1, () => counted(closed, 'again'))).toBe(first);
    expect(cache.get('a', 2, () => counted(closed, 'a2')).name).toBe('a2');
    expect(closed).toEqual(['a1']);
    cache.forget('a');
    expect(closed).toEqual(['a1', 'a2']);
    expect(cache.size()).toBe(0);
  });

  it('should hand make the client it replaces, so what outlives a client can be carried over', () => {
    const closed: string[] = [];
    const cache = createTenantClientCache<ReturnType<typeof counted>>();
    const replaced: (string | undefined)[] = [];
    const make = (name: string) => (old: ReturnType<typeof counted> | undefined) => {
      replaced.push(old?.name);
      return counted(closed, name);
    };
    cache.get('a', 1, make('a1'));
    cache.get('a', 2, make('a2'));
    cache.forget('a');
    cache.get('a', 2, make('a2 again'));
    expect(replaced).toEqual([undefined, 'a1', undefined]);
    expect(closed).toEqual(['a1', 'a2']);
    cache.close();
  });

  it('should let idle clients go, and keep at most maxTenants, the least recently used going first', () => {
    const closed: string[] = [];
    let clock = 0;
    const cache = createTenantClientCache<ReturnType<typeof counted>>({
      idleMs: 1_000,
      maxTenants: 2,
      now: () => clock,
    });
    cache.get('a', 1, () => counted(closed, 'a'));
    cache.get('b', 1, () => counted(closed, 'b'));
    cache.get('a', 1, () => counted(closed, 'a again'));
    cache.get('c', 1, () => counted(closed, 'c'));
    expect(closed).toEqual(['b']);
    clock = 2_000;
    cache.get('d', 1, () => counted(closed, 'd'));
    expect(closed).toEqual(['b', 'a', 'c']);
    expect(cache.size()).toBe(1);
    cache.close();
    expect(closed).toEqual(['b', 'a', 'c', 'd']);
  });
});

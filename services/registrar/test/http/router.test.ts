import { createRouter, type Route } from '../../src/http/router';

const handler = async () => ({ status: 200 });
const routes: Route[] = [
  { method: 'GET', path: '/v1/tenants/:tenantId/defender', handler },
  { method: 'PUT', path: '/v1/tenants/:tenantId/defender', handler },
  { method: 'POST', path: '/v1/tenants/:tenantId/defender/test', handler },
  { method: 'GET', path: '/v1/tenants/:tenantId/devices/:deviceId', handler },
];

describe('createRouter', () => {
  const route = createRouter(routes);

  it('createRouter should match a route and decode its parameters', () => {
    const match = route('GET', '/v1/tenants/acme%2Eeu/devices/abc%20def');
    expect(match.kind).toBe('found');
    if (match.kind !== 'found') return;
    expect(match.params).toEqual({ tenantId: 'acme.eu', deviceId: 'abc def' });
    expect(match.route).toBe(routes[3]);
  });

  it('createRouter should tell a known path with another method from an unknown path', () => {
    expect(route('DELETE', '/v1/tenants/acme/defender')).toEqual({
      kind: 'method-not-allowed',
      allow: ['GET', 'HEAD', 'PUT'],
    });
    expect(route('HEAD', '/v1/tenants/acme/defender/test')).toEqual({
      kind: 'method-not-allowed',
      allow: ['POST'],
    });
    expect(route('GET', '/v1/tenants/acme/defender/extra')).toEqual({ kind: 'not-found' });
    expect(route('GET', '/v1/tenants/acme')).toEqual({ kind: 'not-found' });
  });

  it('createRouter should match HEAD to the GET route of its path', () => {
    expect(route('HEAD', '/v1/tenants/acme/devices/d1')).toEqual({
      kind: 'found',
      route: routes[3],
      params: { tenantId: 'acme', deviceId: 'd1' },
    });
  });

  it('createRouter should name a parameter that is not valid percent-encoding on a known path', () => {
    expect(route('GET', '/v1/tenants/%E0%A4%A/defender')).toEqual({
      kind: 'undecodable',
      parameter: 'tenantId',
    });
    expect(route('GET', '/v1/tenants/acme/devices/%ZZ')).toEqual({
      kind: 'undecodable',
      parameter: 'deviceId',
    });
    expect(route('GET', '/v1/tenants/%E0%A4%A/nowhere')).toEqual({ kind: 'not-found' });
  });

  it('createRouter should refuse a route registered twice', () => {
    expect(() =>
      createRouter([...routes, { method: 'GET', path: '/v1/tenants/:tenantId/defender', handler }]),
    ).toThrow(/registered twice/);
  });
});

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startSimulator, type Simulator } from '@urs/simulator';
import { request } from './helpers';

// In Docker the stages trust the ca.pem the simulator wrote to a volume when they started: a simulator started
// again (a restart, `docker compose up` of it alone) must keep serving under that CA, or they fail every call.
describe('simulator --ca-dir', () => {
  let dir = '';
  const started: Simulator[] = [];

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'urs-sim-ca-'));
  });
  afterEach(async () => {
    await Promise.all(started.splice(0).map((sim) => sim.close()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function start(): Promise<Simulator> {
    const sim = await startSimulator({ quotas: false, caDir: dir });
    started.push(sim);
    return sim;
  }

  /** A client that trusts `caPem` only, asking `sim` for its info. */
  function reachWith(sim: Simulator, caPem: string): Promise<{ status: number }> {
    return request({ ...sim, caPem }, '/_sim/info');
  }

  test('a simulator started again on the same directory should serve under the CA it wrote the first time', async () => {
    const first = await start();
    const trusted = fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8');
    expect(trusted).toBe(first.caPem);
    await first.close();

    const second = await start();
    expect(second.caPem).toBe(trusted);
    expect(fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8')).toBe(trusted);
    expect((await reachWith(second, trusted)).status).toBe(200);
  });

  test('the CA key should be written beside ca.pem, readable by its owner only', async () => {
    await start();
    const key = path.join(dir, 'ca-key.pem');
    expect(fs.readFileSync(key, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(fs.statSync(key).mode & 0o077).toBe(0);
  });

  test('with a key directory of its own, the key should be written there alone, and kept across starts', async () => {
    const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'urs-sim-ca-key-'));
    try {
      // A key an earlier start wrote beside ca.pem, where the stages read.
      fs.writeFileSync(path.join(dir, 'ca-key.pem'), 'an earlier key\n');
      const first = await startSimulator({ quotas: false, caDir: dir, caKeyDir: keyDir });
      started.push(first);
      expect(fs.readdirSync(dir)).toEqual(['ca.pem']);
      const key = path.join(keyDir, 'ca-key.pem');
      expect(fs.readFileSync(key, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
      expect(fs.statSync(key).mode & 0o077).toBe(0);
      await first.close();

      const second = await startSimulator({ quotas: false, caDir: dir, caKeyDir: keyDir });
      started.push(second);
      expect(second.caPem).toBe(first.caPem);
      expect(fs.readdirSync(dir)).toEqual(['ca.pem']);
      expect((await reachWith(second, first.caPem)).status).toBe(200);
    } finally {
      fs.rmSync(keyDir, { recursive: true, force: true });
    }
  });

  /** What spoils the CA of `dir`, given `other`, the directory of another simulator's CA. */
  const spoilers: [string, (other: string) => void][] = [
    ['a ca.pem without its key', () => fs.rmSync(path.join(dir, 'ca-key.pem'))],
    [
      'a key of another CA',
      (other) => fs.copyFileSync(path.join(other, 'ca-key.pem'), path.join(dir, 'ca-key.pem')),
    ],
    [
      'a ca.pem that is not a certificate',
      () => fs.writeFileSync(path.join(dir, 'ca.pem'), 'not a certificate\n'),
    ],
  ];

  test.each(spoilers)(
    'a simulator should make a new CA over %s, and serve under it',
    async (_case, spoil) => {
      const other = fs.mkdtempSync(path.join(os.tmpdir(), 'urs-sim-ca-other-'));
      try {
        const first = await start();
        const earlier = first.caPem;
        await first.close();
        await (await startSimulator({ quotas: false, caDir: other })).close();
        spoil(other);

        const second = await start();
        expect(second.caPem).not.toBe(earlier);
        expect(fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8')).toBe(second.caPem);
        expect((await reachWith(second, second.caPem)).status).toBe(200);
      } finally {
        fs.rmSync(other, { recursive: true, force: true });
      }
    },
  );
});

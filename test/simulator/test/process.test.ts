import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Simulator } from '@urs/simulator';
import { CLIENT_ID, control, getToken, request, SECRET, TENANT } from './helpers';

/** Simulator processes started and not yet exited, stopped after each test whatever its outcome. */
const running = new Set<ChildProcess>();

// `npm run sim` runs dist/main.js; here the same entry runs from source in a child process.
function startProcess(
  args: string[],
): Promise<{ child: ChildProcess; ready: { baseUrl: string; caFile: string } }> {
  const child = spawn(
    process.execPath,
    ['-r', path.join(__dirname, 'ts-register.js'), path.join(__dirname, '../src/main.ts'), ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  running.add(child);
  child.once('exit', () => running.delete(child));
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout?.once('data', (line: Buffer) => resolve({ child, ready: JSON.parse(line.toString()) }));
    child.once('exit', (code) => reject(new Error(`simulator exited ${String(code)}: ${stderr}`)));
  });
}

async function stopRunning(): Promise<void> {
  await Promise.all(
    [...running].map((child) => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      return exited;
    }),
  );
}

describe('simulator process', () => {
  // A test that times out while its simulator starts would otherwise leave the process (and the
  // pipes Jest holds to it) running after the run.
  afterEach(stopRunning);

  test('main should print baseUrl and caFile, serve its tenants and obey the control API', async () => {
    const caDir = mkdtempSync(path.join(tmpdir(), 'urs-sim-proc-'));
    const { child, ready } = await startProcess([
      '--port',
      '0',
      '--ca-dir',
      caDir,
      '--quotas',
      'off',
      '--tenant',
      `${TENANT}:${CLIENT_ID}:${SECRET}:25`,
    ]);
    try {
      expect(ready.caFile).toBe(path.join(caDir, 'ca.pem'));
      // The request helpers only need these two fields of a Simulator.
      const remote = { baseUrl: ready.baseUrl, caPem: readFileSync(ready.caFile, 'utf8') } as Simulator;
      const token = await getToken(remote);
      const page = await request(remote, '/api/machines?$top=100', { token });
      expect(page.json.value).toHaveLength(25);
      await control(remote, 'POST', `tenants/${TENANT}/machines`, { count: 5 });
      expect((await request(remote, '/api/machines?$top=100', { token })).json.value).toHaveLength(30);
      const stats = await control(remote, 'GET', 'stats');
      expect(stats.json.calls).toMatchObject({ token: 1, machines: 2 });
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  }, 30_000);

  test('main should exit 2 naming a bad option', async () => {
    await expect(startProcess(['--port', 'nope'])).rejects.toThrow(
      "--port must be an integer >= 0, got 'nope'",
    );
  }, 30_000);
});

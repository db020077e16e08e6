import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../support/ports';
import { fromStackModule } from './stack-module';

/** Asks the server `command` (inline form) and answers its first reply line. */
function ask(port: number, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(`${command}\r\n`));
    socket.once('data', (data) => {
      resolve(data.toString('utf8').split('\r\n')[0] ?? '');
      socket.end();
    });
    socket.once('error', reject);
  });
}

// The local stack starts redis-server with REDIS_URL's password: in a config file only its user reads, never
// on the command line, where `ps` shows it to every user.
describe('the local stack’s Redis password', () => {
  it('should reach redis-server through a file of mode 0600, quotes and backslashes intact', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'urs-redis-pw-'));
    const password = 'p"a\\ss w0rd';
    const file = fromStackModule(
      'redis.mjs',
      `m.writePasswordConfig(${JSON.stringify(dir)}, ${JSON.stringify(password)})`,
    );
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const port = await freePort();
    const server = spawn(
      'redis-server',
      [file, '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', ''],
      {
        stdio: 'ignore',
      },
    );
    // A redis-server that cannot start (not installed, the port taken meanwhile) fails the test at once.
    const ended = new Promise<never>((_, reject) => {
      server.once('error', reject);
      server.once('exit', (code, signal) =>
        reject(new Error(`redis-server ended before answering (code ${code}, signal ${signal})`)),
      );
    });
    ended.catch(() => undefined);
    let done = false;
    try {
      const answered = (async () => {
        while (!done) {
          const answer = await ask(port, 'PING').catch(() => '');
          if (answer !== '') return answer;
          await new Promise((r) => setTimeout(r, 100));
        }
        return '';
      })();
      const answer = await Promise.race([answered, ended]);
      expect(answer).toMatch(/NOAUTH/);
      expect(await ask(port, `AUTH "${password.replace(/[\\"]/g, '\\$&')}"`)).toBe('+OK');
      const cmdline = fs.readFileSync(`/proc/${server.pid}/cmdline`, 'utf8');
      expect(cmdline).not.toContain('w0rd');
    } finally {
      done = true;
      server.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 15_000);
});

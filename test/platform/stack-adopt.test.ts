import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../support/ports';
import { fromStackModule, fromStackModuleAsync } from './stack-module';

// `stack:up` adopts the broker its stack directory's pid file names. A broker of that directory started on
// other ports (another run of .ci/run, a developer's stack) is not the one wanted on this port: adopting it
// waited for a broker that never answered there, and the stop that followed took the running broker down.
// `stack:down` stops only the broker of its stack directory configured for its port: run with another port
// (URS_STACK_KAFKA_PORT, or .ci/run's own ports while .stack's broker runs), it took that broker down.
describe("the local stack's kafkaUp and kafkaDown", () => {
  let stackDir = '';
  let broker: ChildProcess | undefined;

  beforeEach(() => {
    stackDir = mkdtempSync(join(tmpdir(), 'urs-stack-adopt-'));
  });
  afterEach(() => {
    broker?.kill('SIGKILL');
    broker = undefined;
    rmSync(stackDir, { recursive: true, force: true });
  });

  /** A process whose command line is that of this stack directory's broker, listening on `port` by its config. */
  function brokerOfStackDir(port: number): number {
    const config = join(stackDir, 'kafka', 'server.properties');
    mkdirSync(join(stackDir, 'kafka'), { recursive: true });
    const properties = fromStackModule(
      'kafka-config.mjs',
      `m.serverProperties(${JSON.stringify({ port, controllerPort: port + 1, dataDir: join(stackDir, 'data'), partitions: 3 })})`,
    );
    writeFileSync(config, properties);
    broker = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'kafka.Kafka', config], {
      stdio: 'ignore',
    });
    const pid = broker.pid ?? 0;
    writeFileSync(join(stackDir, 'kafka', 'kafka.pid'), `${pid}\n`);
    return pid;
  }

  /** The stack configuration of this stack directory for `kafkaPort`. */
  function configFor(kafkaPort: number): string {
    return JSON.stringify({
      root: join(__dirname, '..', '..'),
      stackDir,
      kafkaPort,
      controllerPort: kafkaPort + 1,
      kafkaHeapOpts: '-Xmx64m',
      readyTimeoutMs: 2_000,
      redisUrl: 'redis://127.0.0.1:1',
    });
  }

  /** kafkaUp's outcome for this stack directory and `kafkaPort`: its state, or the message it failed with. */
  function kafkaUp(kafkaPort: number): string {
    return fromStackModule(
      'kafka.mjs',
      `await m.kafkaUp(${configFor(kafkaPort)}).then((status) => status.state, (error) => error.message)`,
    );
  }

  /** kafkaDown's outcome for this stack directory and `kafkaPort`: what it did, or the message it failed with. */
  function kafkaDown(kafkaPort: number): Promise<string> {
    return fromStackModuleAsync(
      'kafka.mjs',
      `await m.kafkaDown(${configFor(kafkaPort)}).then((done) => done, (error) => error.message)`,
    );
  }

  /** Whether the process `pid` runs (this process reaps its exited children). */
  function running(pid: number): boolean {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }

  it('should refuse the pid file broker configured for another port, naming both, and leave it running', async () => {
    const [configured, wanted] = [await freePort(), await freePort()];
    const pid = brokerOfStackDir(configured);
    const outcome = kafkaUp(wanted);
    expect(outcome).toContain(`127.0.0.1:${configured}`);
    expect(outcome).toContain(`127.0.0.1:${wanted}`);
    expect(outcome).toContain('URS_STACK_DIR');
    expect(() => process.kill(pid, 0)).not.toThrow();
  });

  it('should refuse to stop the pid file broker configured for another port, naming both, and leave it running', async () => {
    const [configured, wanted] = [await freePort(), await freePort()];
    const pid = brokerOfStackDir(configured);
    const outcome = await kafkaDown(wanted);
    expect(outcome).toContain(`127.0.0.1:${configured}`);
    expect(outcome).toContain(`127.0.0.1:${wanted}`);
    expect(running(pid)).toBe(true);
    expect(existsSync(join(stackDir, 'kafka', 'kafka.pid'))).toBe(true);
  });

  it('should stop the pid file broker configured for its port', async () => {
    const port = await freePort();
    const pid = brokerOfStackDir(port);
    expect(await kafkaDown(port)).toBe(`stopped pid ${pid}`);
    expect(running(pid)).toBe(false);
  });
});

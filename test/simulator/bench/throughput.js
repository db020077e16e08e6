// Requests per second the simulator sustains at latency 0, quotas off. The simulator runs as its own
// process (as in benchmarks); this process is the load generator.
//   node test/simulator/bench/throughput.js [--connections 32] [--seconds 10] [--devices 100000]
// Needs a build first (npm run build). Prints one JSON line per scenario.
'use strict';
const { spawn } = require('node:child_process');
const https = require('node:https');
const { readFileSync } = require('node:fs');
const path = require('node:path');

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const connections = opt('connections', 32);
const seconds = opt('seconds', 10);
const devices = opt('devices', 100000);
const TENANT = '0b1e3c4d-0000-4000-8000-00000000b001';

function startSim() {
  const child = spawn(
    process.execPath,
    [
      path.join(__dirname, '../dist/main.js'),
      '--port',
      '0',
      '--quotas',
      'off',
      '--ca-dir',
      path.join(require('node:os').tmpdir(), 'urs-sim-bench'),
      '--tenant',
      `${TENANT}:bench-client:bench-secret:${devices}`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return new Promise((resolve, reject) => {
    child.stdout.once('data', (line) => resolve({ child, ...JSON.parse(String(line)) }));
    child.once('exit', (code) => reject(new Error(`simulator exited ${code}`)));
  });
}

function call(agent, base, pathname, headers, body) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      `${base}${pathname}`,
      { agent, method: body ? 'POST' : 'GET', headers },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    if (body) req.end(body);
    else req.end();
  });
}

async function run(name, agent, base, nextPath, headers, body) {
  const deadline = Date.now() + seconds * 1000;
  let done = 0;
  let failed = 0;
  let bytes = 0;
  let i = 0;
  const worker = async () => {
    while (Date.now() < deadline) {
      const r = await call(agent, base, nextPath(i++), headers, body);
      if (r.status === 200) done++;
      else failed++;
      bytes += r.text.length;
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: connections }, worker));
  const elapsed = (Date.now() - started) / 1000;
  console.log(
    JSON.stringify({
      scenario: name,
      connections,
      seconds: elapsed,
      requests: done,
      failed,
      rps: Math.round(done / elapsed),
      mbPerSec: +(bytes / elapsed / 1e6).toFixed(1),
    }),
  );
}

(async () => {
  const sim = await startSim();
  const agent = new https.Agent({ ca: readFileSync(sim.caFile), keepAlive: true, maxSockets: connections });
  try {
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: 'bench-client',
      client_secret: 'bench-secret',
      scope: 'https://api.securitycenter.microsoft.com/.default',
    }).toString();
    const tok = JSON.parse(
      (
        await call(
          agent,
          sim.baseUrl,
          `/${TENANT}/oauth2/v2.0/token`,
          { 'content-type': 'application/x-www-form-urlencoded' },
          form,
        )
      ).text,
    ).access_token;
    const headers = { authorization: `Bearer ${tok}` };
    const list = JSON.parse(
      (await call(agent, sim.baseUrl, `/_sim/tenants/${TENANT}/machines?top=${Math.min(devices, 20000)}`, {}))
        .text,
    ).value.map((m) => m.id);
    await run(
      'token',
      agent,
      sim.baseUrl,
      () => `/${TENANT}/oauth2/v2.0/token`,
      { 'content-type': 'application/x-www-form-urlencoded' },
      form,
    );
    await run(
      'vulnerabilities',
      agent,
      sim.baseUrl,
      (i) => `/api/machines/${list[i % list.length]}/vulnerabilities`,
      headers,
    );
    await run(
      'machines $top=100',
      agent,
      sim.baseUrl,
      (i) => `/api/machines?$top=100&$skip=${(i * 100) % devices}`,
      headers,
    );
    await run(
      'machines $top=10000',
      agent,
      sim.baseUrl,
      (i) => `/api/machines?$top=10000&$skip=${(i * 10000) % devices}`,
      headers,
    );
  } finally {
    agent.destroy();
    sim.child.kill('SIGTERM');
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});

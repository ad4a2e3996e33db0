// A lab host's console logs reach the API whole across a crash of the API: the shipper sends a log
// that grows while `paddock serve` is killed with -9 and started again, and the API's copy is the
// lab host's log byte for byte (nothing lost, nothing twice). After finish() the lab host's copy is
// gone. The agent's side is the real ConsoleShipper, with an agent token of the machine's lab host.
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import got from 'got';
import { Paddock } from '../../client/index.js';
import { ConsoleShipper } from '../../lab-host/console-shipper.js';
import { freePort } from '../helpers/ports.js';
import { killHard, startServerProcess, stopGracefully } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { silentLog } from '../../protocol/log.js';

test('a growing console log reaches the API whole across kill -9 of the API', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-shipper-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const config = path.join(dir, 'paddock.yaml');
  writeFileSync(
    config,
    [
      `listen: 127.0.0.1:${port}`,
      'dataDir: data',
      'agent: { enabled: false }',
      'agents: { heartbeatTimeout: 1d }',
      'machines:',
      '  - { name: m1, kind: static, labHost: lab-a, labels: { type: a }, settings: { address: 127.0.9.1, user: ci, adminKey: /nonexistent } }',
    ].join('\n'),
  );
  let server = await startServerProcess(['--config', config], url);
  const lines: string[] = [];
  let shipper: ConsoleShipper | undefined;
  try {
    const admin = new Paddock({ url, token: readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim() });
    const agentToken = (await admin.createToken('lab-a', 'agent')).token;
    const reservation = await admin.reserve({ members: [{ role: 'x', spec: 'type=a' }], lease: '1h' });
    const consoles = path.join(dir, 'lab-a', 'consoles');
    const log = path.join(consoles, reservation.id, 'm1.log');
    mkdirSync(path.dirname(log), { recursive: true });
    const http = got.extend({ prefixUrl: url, headers: { authorization: `Bearer ${agentToken}` }, retry: { limit: 0 }, timeout: { request: 10_000 } });
    shipper = new ConsoleShipper({ http, dir: consoles, log: silentLog(), intervalMs: 50 });
    shipper.start();
    const apiCopy = path.join(dir, 'data', 'consoles', reservation.id, 'm1.log');
    const print = (count: number) => {
      for (let index = 0; index < count; index++) {
        const line = `boot line ${String(lines.length).padStart(6, '0')} ${'x'.repeat(100)}\n`;
        lines.push(line);
        appendFileSync(log, line);
      }
    };
    print(2000);
    await waitFor(async () => existsSync(apiCopy) && readFileSync(apiCopy, 'utf8').length > 0, 60_000, 'the first chunks at the API');

    // The API dies mid-stream; the machine prints on.
    await killHard(server);
    print(3000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    server = await startServerProcess(['--config', config], url);
    print(3000);
    const all = lines.join('');
    await waitFor(async () => existsSync(apiCopy) && readFileSync(apiCopy, 'utf8').length >= all.length, 120_000, 'the whole log at the API');
    t.is(readFileSync(apiCopy, 'utf8'), all, 'byte for byte: nothing lost, nothing twice');

    await shipper.finish(reservation.id, 'm1');
    t.false(existsSync(log), "the lab host's copy is gone once the API has it all");
    t.false(existsSync(`${log}.ended`));
    const owner = await got(`${url}/v1/reservations/${reservation.id}/console`, {
      headers: { authorization: `Bearer ${readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim()}` },
    }).text();
    t.is(owner, all, 'and the API serves it');
  } finally {
    shipper?.stop();
    await stopGracefully(server);
    rmSync(dir, { recursive: true, force: true });
  }
});

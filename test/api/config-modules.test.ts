// The API process reads the config through the kinds' descriptors only: loading api/config.ts and
// api/pools.ts and reading a config with every kind loads no provisioner, no serial port, no SNMP
// library and no SSH library; and the API starts without them, without an HTTP client (got) and
// without the WebSocket library. Each case runs in a fresh process whose loaded modules are
// recorded (test/helpers/loads/).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import test from 'ava';

const root = path.resolve(import.meta.dirname, '../..');
const source = (file: string) => JSON.stringify(pathToFileURL(path.join(root, file)).href);

const everyKind = `
machines:
  - { name: host, kind: static, settings: { address: 127.0.0.1, user: ci, adminKey: /etc/paddock/key } }
  - { name: vm, kind: qemu, count: 2 }
  - name: serial-board
    kind: board
    settings:
      power: { driver: pdudaemon, pdu: lab, port: 1 }
      console: { device: /dev/ttyUSB0 }
      boot: { serverIp: 10.0.0.1 }
  - name: tcp-board
    kind: board
    settings:
      power: { driver: snmp, host: 10.0.0.2, outlet: 3 }
      console: { tcp: "127.0.0.1:7001" }
      boot: { serverIp: 10.0.0.1 }
  - name: relay-board
    kind: board
    settings:
      power: { driver: command, on: "relay on", off: "relay off" }
      console: { tcp: "127.0.0.1:7002" }
      boot: { serverIp: 10.0.0.1 }
  - { name: cloud, kind: openstack, settings: { network: lab, flavors: [m1.small] } }
`;

/** The modules a fresh process loaded after running `script` (an ES module body). */
async function loadedBy(script: string): Promise<string[]> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'paddock-loads-'));
  try {
    const file = path.join(dir, 'loads');
    await promisify(execFile)(process.execPath, ['--import', 'tsx', '--import', './test/helpers/loads/record.ts', '--input-type=module', '-e', script], {
      cwd: root,
      env: { ...process.env, PADDOCK_LOADS: file },
    });
    return (await readFile(file, 'utf8')).split('\n').filter(Boolean);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** What of `urls` the API process must not load at start: heavy packages and the kinds' provisioners. */
function heavy(urls: string[]): string[] {
  const found = new Set<string>();
  for (const url of urls) {
    const dependency = /\/node_modules\/((?:@serialport\/)?[^/]+)\//.exec(url)?.[1];
    if (dependency && /^(serialport|@serialport\/.+|net-snmp|ssh2|got|ws)$/.test(dependency)) found.add(dependency.replace(/^@serialport\/.+/, 'serialport'));
    const provisioner = /\/provisioners\/([^/]+\/provisioner|ssh-probe)\.ts$/.exec(url)?.[1];
    if (provisioner) found.add(provisioner);
  }
  return [...found].sort();
}

const readConfig = `
  const { parseConfig } = await import(${source('api/config.ts')});
  await import(${source('api/pools.ts')});
  const config = parseConfig(${JSON.stringify(everyKind)});
  if (config.machines.length !== 7) throw new Error('expected 7 machines, got ' + config.machines.length);
`;

test('reading a config with every kind loads no provisioner, no serial port, no SNMP and no SSH library', async (t) => {
  t.deepEqual(heavy(await loadedBy(readConfig)), []);
});

test('starting the API on a config with every kind but a cloud pool loads none of them either', async (t) => {
  const loads = await loadedBy(`
    const { mkdtemp, rm } = await import('node:fs/promises');
    const path = await import('node:path');
    const os = await import('node:os');
    const { parseConfig } = await import(${source('api/config.ts')});
    const { startApi } = await import(${source('api/serve.ts')});
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'paddock-loads-api-'));
    const config = { ...parseConfig(${JSON.stringify(everyKind.replace(/^.*kind: openstack.*$/m, ''))}), listen: { host: '127.0.0.1', port: 0 }, dataDir };
    const { silentLog } = await import(${source('protocol/log.ts')});
    const api = await startApi({ config, log: silentLog() });
    const answer = await fetch(api.url + '/healthz');
    if (answer.status !== 200) throw new Error('healthz answered ' + answer.status);
    await api.close();
    await rm(dataDir, { recursive: true, force: true });
  `);
  t.true(
    loads.some((url) => url.endsWith('/api/serve.ts')),
    'the recording sees the API',
  );
  t.deepEqual(heavy(loads), []);
});

test('an agent loads the provisioners of the kinds it provisions (the recording sees them)', async (t) => {
  const loads = heavy(
    await loadedBy(`
      ${readConfig}
      const { getKind } = await import(${source('provisioners/registry.ts')});
      await getKind('board').load();
      await getKind('static').load();
    `),
  );
  // ssh2 itself waits for the first SSH connection (protocol/ssh.ts).
  t.deepEqual(loads, ['board/provisioner', 'ssh-probe', 'static/provisioner']);
});

// The config file is validated at load: errors name the file, the line, the path and the problem;
// unknown keys are refused; capacities take units.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { configProblems as problems } from '../helpers/config.js';
import { ConfigError, loadConfig, parseConfig } from '../../api/config.js';

const machine = (extra = '') => `
machines:
  - name: panda-1
    kind: static
    labels: { type: panda, arch: armv7 }
    capacities: { ram: 2GiB, cpus: 4, disk: 1GB }
    settings: { address: 127.0.0.1, user: ci, adminKey: /etc/paddock/key }${extra}
`;

test('a valid config parses, with capacities in bytes and defaults filled in', (t) => {
  const config = parseConfig(`listen: 0.0.0.0:8080\n${machine()}`);
  t.deepEqual(config.listen, { host: '0.0.0.0', port: 8080 });
  t.is(config.machines[0].capacities.ram, 2 * 1024 ** 3);
  t.is(config.machines[0].capacities.disk, 1e9);
  t.is(config.machines[0].capacities.cpus, 4);
  t.is(config.machines[0].labels.kind, 'static');
  t.is(config.lease.default, 1800);
  t.is(config.queue.aging, 60);
});

test('an unknown key is refused with its line and path', (t) => {
  const message = problems(`listen: 127.0.0.1:7300\nlisten_port: 9\n`);
  t.regex(message, /^lab\.yaml: invalid configuration/);
  t.regex(message, /line 2|listen_port/);
  t.regex(message, /listen_port/);
  const inMachine = problems(machine('\n    colour: red'));
  t.regex(inMachine, /line 8: machines\[0\]\.colour: unknown key "colour"/, "the key's own line, not its machine's");
});

test('a bad quantity, a bad duration and an unknown kind are named', (t) => {
  t.regex(problems(machine().replace('2GiB', 'lots')), /line 6: machines\[0\]\.capacities\.ram: not a quantity: "lots"/);
  t.regex(problems(`lease: { default: forever }\n`), /lease\.default: not a duration/);
  t.regex(problems(machine().replace('kind: static', 'kind: teleporter')), /machines\[0\]\.kind: .*teleporter/);
});

test('quotas: defaults filled in, a token override replaces only what it names, bad limits named', (t) => {
  const quotas = parseConfig('quotas: { default: { queued: 5, imageBytes: 1GiB }, tokens: { ci: { queued: unlimited, runs: 3 } } }').quotas;
  t.deepEqual(quotas.default, { reservations: 200, queued: 5, machines: 64, imageBytes: 1024 ** 3, uploads: 4, runs: 100 });
  t.deepEqual(quotas.tokens.ci, { queued: undefined, runs: 3 });
  t.deepEqual(parseConfig('').quotas.tokens, {});
  t.regex(problems('quotas:\n  default: { queued: -1 }\n'), /line 2: quotas\.default\.queued: not a quota: -1/);
  t.regex(problems('quotas: { default: { machines: 2.5 } }\n'), /quotas\.default\.machines: not a quota/);
  t.regex(problems('quotas: { tokens: { ci: { hosts: 3 } } }\n'), /quotas\.tokens\.ci.*hosts/);
});

test("a kind's settings are checked by its own schema", (t) => {
  t.regex(problems(machine().replace('adminKey: /etc/paddock/key', 'adminKee: /etc/paddock/key')), /machines\[0\]\.settings/);
  t.regex(problems(machine().replace('address: 127.0.0.1, ', '')), /machines\[0\]\.settings.*address/);
});

test('duplicate names and YAML syntax errors are reported', (t) => {
  t.regex(problems(machine() + machine().replace('machines:\n', '')), /duplicate machine name panda-1/);
  t.regex(problems('machines: [\n  {name: x\n'), /line \d+/);
});

test('loadConfig names the file it cannot read and resolves dataDir and key paths next to the file', (t) => {
  const error = t.throws(() => loadConfig('/nonexistent/paddock.yaml'), { instanceOf: ConfigError });
  t.regex(error!.message, /\/nonexistent\/paddock\.yaml: [\s\S]*ENOENT/);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-config-'));
  try {
    writeFileSync(path.join(dir, 'paddock.yaml'), `dataDir: state\n${machine().replace('/etc/paddock/key', 'keys/admin')}`);
    const config = loadConfig(path.join(dir, 'paddock.yaml'));
    t.is(config.dataDir, path.join(dir, 'state'));
    t.is((config.machines[0].settings as { adminKey: string }).adminKey, path.join(dir, 'keys/admin'), "key paths are taken from the file's folder");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a board is checked at load: power driver, console, boot settings, each named with its line', (t) => {
  const board = (settings: string) => `machines:\n  - name: panda-1\n    kind: board\n    labels: { arch: armv7 }\n    settings:\n${settings}\n`;
  const good = [
    '      power: { driver: pdudaemon, pdu: pdu01, port: 3 }',
    '      console: { device: /dev/ttyUSB0 }',
    '      boot: { serverIp: 10.0.0.1 }',
  ].join('\n');
  const config = parseConfig(board(good));
  t.is((config.machines[0].settings as { minOffTime: number }).minOffTime, 5, 'the minimum off-time defaults to 5 s');
  t.regex(problems(board(good.replace('driver: pdudaemon', 'driver: pdux'))), /line 6: machines\[0\]\.settings\.power\.driver/);
  t.regex(problems(board(good.replace('{ device: /dev/ttyUSB0 }', '{ tcp: ser2net }'))), /machines\[0\]\.settings\.console/);
  t.regex(problems(board(good.replace('serverIp: 10.0.0.1', 'serverIp: lab-host'))), /machines\[0\]\.settings\.boot\.serverIp: an IPv4 address/);
  t.regex(problems(board(`${good}\n      minOfftime: 30`)), /machines\[0\]\.settings.*minOfftime/);
});

test('a QEMU pool: count makes NAME-1 … NAME-N with the slot size as capacities', (t) => {
  const config = parseConfig('machines:\n  - name: vm\n    kind: qemu\n    count: 3\n    capacities: { ram: 512MiB }\n');
  t.deepEqual(
    config.machines.map((machine) => machine.name),
    ['vm-1', 'vm-2', 'vm-3'],
  );
  t.deepEqual(config.machines[2].capacities, { cpus: 1, ram: 512 * 1024 ** 2 });
  t.is(config.machines[0].labels.arch, 'x86_64');
  t.regex(problems('machines:\n  - name: vm\n    kind: qemu\n    settings: { accel: hvf }\n'), /machines\[0\]\.settings\.accel/);
});

test("labHost names a machine's lab host: the embedded agent's by default, any valid name, checked like other names", (t) => {
  t.is(parseConfig(machine()).machines[0].labHost, 'local', "without labHost: the embedded agent's default name");
  t.is(parseConfig(`agent: { name: bench-1 }\n${machine()}`).machines[0].labHost, 'bench-1', "without labHost: the embedded agent's name");
  t.is(parseConfig(machine('\n    labHost: lab-nowhere.example')).machines[0].labHost, 'lab-nowhere.example', 'an unknown lab host is just a name');
  const pool = parseConfig(`machines:\n  - { name: vm, kind: qemu, count: 2, labHost: lab-b }\n`);
  t.deepEqual(
    pool.machines.map((each) => [each.name, each.labHost]),
    [
      ['vm-1', 'lab-b'],
      ['vm-2', 'lab-b'],
    ],
  );
  for (const bad of ['"lab a"', '"../etc"', '"-lab"', '"lab\\u0007"', '""']) {
    t.regex(problems(machine(`\n    labHost: ${bad}`)), /line 8: machines\[0\]\.labHost: names use letters, digits/, bad);
  }
  t.is(parseConfig('').agents.heartbeatTimeout, 30);
  t.is(parseConfig('agents: { heartbeatTimeout: 3s }').agents.heartbeatTimeout, 3);
  t.regex(problems('agents: { heartbeatTimeout: 0 }'), /agents\.heartbeatTimeout: at least 1s/);
  t.regex(problems('agents: { heartbeat: 3s }'), /agents.*heartbeat/);
});

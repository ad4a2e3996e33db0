// The `warm` key of a machine entry: what the config accepts and what it refuses, with the entry
// it came from named on every machine of the pool.
import test from 'ava';
import { ConfigError, parseConfig } from '../../api/config.js';

const entry = (extra: string, kind = 'qemu', count = 'count: 2,') => `machines:\n  - { name: vm, kind: ${kind}, ${count} ${extra} }\n`;
const refused = (t: import('ava').ExecutionContext, yaml: string, pattern: RegExp) => {
  const error = t.throws(() => parseConfig(yaml), { instanceOf: ConfigError });
  t.regex(error?.message ?? '', pattern);
};

test('a warm image on a QEMU pool: NAME means NAME:latest, idle defaults to 30 minutes, every slot names its pool', (t) => {
  const config = parseConfig(entry('warm: [{ image: tiny, count: 1 }, { image: "disk:v2", count: 1, idle: 90s }]'));
  t.deepEqual(
    config.machines.map((machine) => [machine.name, machine.warmPool]),
    [
      ['vm-1', 'vm'],
      ['vm-2', 'vm'],
    ],
  );
  t.deepEqual(config.machines[0].warm, [
    { image: 'tiny:latest', count: 1, idle: 1800 },
    { image: 'disk:v2', count: 1, idle: 90 },
  ]);
});

test('warm asks no more machines than the entry has, once per image, with known keys only', (t) => {
  refused(t, entry('warm: [{ image: tiny, count: 3 }]'), /machines\[0\]\.warm: 3 warm machines asked of an entry of 2 slots/);
  refused(t, entry('warm: [{ image: tiny, count: 2 }]', 'qemu', ''), /2 warm machines asked of an entry of 1 slot$/m);
  refused(t, entry('warm: [{ image: tiny, count: 1 }, { image: "tiny:latest", count: 1 }]'), /tiny:latest is warm twice/);
  refused(t, entry('warm: [{ image: tiny, count: 1, size: 2 }]'), /size/);
  refused(t, entry('warm: [{ image: "../etc", count: 1 }]'), /an image is NAME or NAME:TAG/);
  refused(t, entry('warm: [{ image: tiny, count: 1, idle: soon }]'), /not a duration/);
});

test('warm is for QEMU slots, boards with SSH and OpenStack pools: another kind, or a console-only board, is refused with a clear message', (t) => {
  refused(
    t,
    entry('settings: { host: 127.0.0.1, user: ci, key: /k }, warm: [{ image: tiny, count: 1 }]', 'static', ''),
    /warm machines are kept for QEMU slots, boards and OpenStack pools only, not for kind static/,
  );
  const board = (ssh: string) =>
    entry(
      `settings: { power: { driver: command, on: "true", off: "true" }, console: { device: /dev/ttyUSB0 }, boot: { serverIp: 10.0.0.1 }${ssh} }, warm: [{ image: tiny, count: 1 }]`,
      'board',
      '',
    );
  refused(t, board(''), /machines\[0\]\.warm: a board is kept warm only with ssh settings/);
  t.deepEqual(parseConfig(board(', ssh: { host: 10.0.0.2 }')).machines[0].warm, [{ image: 'tiny:latest', count: 1, idle: 1800 }]);
  refused(
    t,
    entry('settings: { power: { driver: command, on: "true", off: "true" } }, warm: [{ image: tiny, count: 2 }]', 'board', ''),
    /2 warm machines asked of an entry of 1 slot/,
  );
});

test('an OpenStack pool keeps no more warm servers than its maxInstances, and only with ready: ssh', (t) => {
  const cloud = (settings: string, count: number) =>
    entry(
      `settings: { auth: { authUrl: "http://127.0.0.1:5000/v3", username: u, password: p, project: p }, network: net1, flavors: [m1.tiny], ${settings} }, warm: [{ image: tiny, count: ${count} }]`,
      'openstack',
      '',
    );
  t.deepEqual(parseConfig(cloud('maxInstances: 3', 3)).machines[0].warm, [{ image: 'tiny:latest', count: 3, idle: 1800 }]);
  refused(t, cloud('maxInstances: 2', 3), /3 warm machines asked of an entry of 2 slots/);
  refused(t, cloud('maxInstances: 2, ready: active', 1), /a warm server is handed over by an SSH login: the pool must be ready: ssh/);
});

// `paddock config check FILE`: every problem of a config file in one pass, each with its line and
// column (a YAML syntax error, unknown keys, bad values, a duplicate machine name, a kind's
// settings), exit 0 for a good file and 1 otherwise, `--json` for scripts; and `paddock serve`
// refuses the same file with the same problems (exit 2).
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { checkConfigText } from '../../api/config.js';

const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');

function paddock(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: 120_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

// Line numbers are on the left for reading; the file starts at `listen`.
const broken = `listen: 127.0.0.1:7300
lease: { default: 30m, max: 8h }
queue:
  timeout: soon
  agin: 60s
machines:
  - name: vm
    kind: qemu
    count: two
  - name: build-1
    kind: static
    settings: { address: 10.0.0.5, user: ci, adminKey: /etc/paddock/key }
  - name: build-1
    kind: static
    settings: { address: 10.0.0.6, user: ci, adminKey: /etc/paddock/key }
  - name: board-1
    kind: board
    capacities: { ram: 4GiB, disk: : 8GB }
    settings:
      power: { driver: pdudaemon, pdu: pdu01, port: 3 }
      console: { device: /dev/ttyUSB0 }
      boot: { serverIp: 10.0.0.1 }
`;

test('every problem in one pass, each at its line and column; exit 1', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-config-check-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'lab.yaml');
  writeFileSync(file, broken);

  const checked = await paddock(['config', 'check', file]);
  t.is(checked.code, 1);
  t.is(
    checked.stdout,
    [
      `${file}:4:12: queue.timeout: not a duration: "soon" (use seconds or 30s, 10m, 2h, 1d)`,
      `${file}:5:3: queue.agin: unknown key "agin"`,
      `${file}:9:12: machines[0].count: Invalid input: expected number, received string`,
      `${file}:13:11: machines[2].name: duplicate machine name build-1 (machines[1] has it)`,
      `${file}:18:36: YAML: Unexpected : in flow map`,
      `${file}: 5 problems`,
      '',
    ].join('\n'),
  );

  const json = await paddock(['config', 'check', file, '--json']);
  t.is(json.code, 1);
  const answer = JSON.parse(json.stdout) as { file: string; valid: boolean; problems: { line: number; column: number; path: string; message: string }[] };
  t.is(answer.file, file);
  t.false(answer.valid);
  t.deepEqual(
    answer.problems.map((problem) => [problem.line, problem.column, problem.path]),
    [
      [4, 12, 'queue.timeout'],
      [5, 3, 'queue.agin'],
      [9, 12, 'machines[0].count'],
      [13, 11, 'machines[2].name'],
      [18, 36, ''],
    ],
  );

  // The server refuses the file with the same problems, and exit status 2.
  const served = await paddock(['serve', '--config', file, '--listen', '127.0.0.1:0']);
  t.is(served.code, 2);
  for (const line of [
    'line 4: queue.timeout: not a duration',
    'line 5: queue.agin: unknown key "agin"',
    'line 13: machines[2].name: duplicate machine name build-1',
    'line 18: YAML: Unexpected : in flow map',
  ])
    t.true(served.stderr.includes(line), line);
});

test('a good file exits 0 and says how many machines it makes; an unreadable one is a problem; no file is a usage error', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-config-check-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'good.yaml');
  writeFileSync(
    file,
    'machines:\n  - { name: vm, kind: qemu, count: 3 }\n  - { name: box, kind: static, settings: { address: 10.0.0.5, user: ci, adminKey: key } }\n',
  );
  const good = await paddock(['config', 'check', file]);
  t.is(good.code, 0, good.stderr);
  t.is(good.stdout, `${file}: valid (4 machines)\n`);
  t.deepEqual(JSON.parse((await paddock(['config', 'check', file, '--json'])).stdout), { file, valid: true, machines: 4, problems: [] });

  const missing = await paddock(['config', 'check', path.join(dir, 'nope.yaml')]);
  t.is(missing.code, 1);
  t.regex(missing.stdout, /nope\.yaml: cannot read: ENOENT/);
  t.is((await paddock(['config', 'check'])).code, 2);
});

test('a required key left out is shown where its map is; a kind unknown and settings checked by the kind', (t) => {
  const problems = checkConfigText(
    'machines:\n  - name: b\n    kind: board\n    settings:\n      console: { device: /dev/ttyUSB0 }\n  - { name: c, kind: teleporter }\n',
  );
  t.deepEqual(
    problems.map((problem) => `${problem.line}:${problem.column} ${problem.path}: ${problem.message}`),
    [
      '5:7 machines[0].settings.power: missing: a required key (object)',
      '5:7 machines[0].settings.boot: missing: a required key (object)',
      '6:22 machines[1].kind: unknown machine kind "teleporter" (known kinds: board, openstack, qemu, static)',
    ],
  );
  t.deepEqual(checkConfigText(''), [], 'an empty file is the defaults');
});

// The provisioning journal: which files are records and which are not (versions, corrupt text),
// names that would lead out of the journal's folder, atomic writes under concurrent readers, and
// what a crash in the middle of a write leaves.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { JournalNameError, OpenRecord, parseRecord, ProvisioningJournal, recordVersion, type ProvisioningRecord } from '../../lab-host/journal.js';

const at = '2025-01-01T00:00:00.000Z';
const record: ProvisioningRecord = {
  version: recordVersion,
  kind: 'qemu',
  machine: 'vm-1',
  reservationId: 'r-0000000000aa',
  allocationId: 'r-0000000000aa.0',
  stage: 'bootSeen',
  ready: false,
  startedAt: at,
  updatedAt: at,
  detail: { port: 2222, pid: 42 },
};

function journalDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-journal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// [what the file holds, undefined when it is a record, else the problem reported]
const files: [string, string, RegExp | undefined][] = [
  ['a record', JSON.stringify(record), undefined],
  [
    'a ready record with readiness',
    JSON.stringify({ ...record, ready: true, readiness: { host: '127.0.0.1', port: 2222, user: 'root' }, readyAt: at }),
    undefined,
  ],
  ['a record with no detail', JSON.stringify({ ...record, detail: undefined }), undefined],
  ['a later version', JSON.stringify({ ...record, version: 2 }), /unknown record version 2/],
  ['no version', JSON.stringify({ ...record, version: undefined }), /unknown record version null/],
  ['a version as text', JSON.stringify({ ...record, version: '1' }), /unknown record version "1"/],
  ['JSON null', 'null', /unknown record version null/],
  ['an array', '[1]', /unknown record version null/],
  ['an empty file', '', /corrupt: not JSON/],
  ['half a record', JSON.stringify(record).slice(0, 40), /corrupt: not JSON/],
  ['binary junk', '\u0000\u0001\u00ff', /corrupt: not JSON/],
  ['no allocation', JSON.stringify({ ...record, allocationId: undefined }), /corrupt: allocationId/],
  ['an unknown stage', JSON.stringify({ ...record, stage: 'booted' }), /corrupt: stage/],
  ['ready as text', JSON.stringify({ ...record, ready: 'yes' }), /corrupt: ready/],
  [
    'another reservation',
    JSON.stringify({ ...record, reservationId: 'r-0000000000bb' }),
    /corrupt: the file names vm-1\/r-0000000000aa, the record vm-1\/r-0000000000bb/,
  ],
  ['another machine', JSON.stringify({ ...record, machine: 'vm-2' }), /corrupt: the file names vm-1/],
];

for (const [what, text, problem] of files) {
  test(`a file holding ${what}: ${problem ? 'reported as unreadable' : 'a record'}`, async (t) => {
    const parsed = parseRecord(text, 'vm-1', 'r-0000000000aa');
    t.is(parsed.machine, 'vm-1');
    t.is(parsed.reservationId, 'r-0000000000aa', 'the names come from the file name, so an unreadable record still says what to release');
    if (problem) t.regex('problem' in parsed ? parsed.problem : '(a record)', problem);
    else t.deepEqual('record' in parsed ? parsed.record : undefined, JSON.parse(text) as ProvisioningRecord);

    // The same through the journal: an unreadable file is listed, never thrown.
    const journal = new ProvisioningJournal(journalDir(t));
    mkdirSync(path.join(journal.root, 'vm-1'));
    writeFileSync(path.join(journal.root, 'vm-1', 'r-0000000000aa.json'), text);
    const listed = await journal.list();
    t.is(listed.length, 1);
    t.is('problem' in listed[0], problem !== undefined);
  });
}

// [machine, reservation id]: names that must not become a path
const tricks: [string, string][] = [
  ['..', 'r-0000000000aa'],
  ['.', 'r-0000000000aa'],
  ['vm-1', '..'],
  ['vm-1', '.'],
  ['../etc', 'r-0000000000aa'],
  ['vm-1', '../../passwd'],
  ['vm-1/..', 'r-0000000000aa'],
  ['vm-1', 'r-1/../../x'],
  ['/etc', 'passwd'],
  ['vm-1', '/tmp/x'],
  ['', 'r-0000000000aa'],
  ['vm-1', ''],
  ['.hidden', 'r-0000000000aa'],
  ['vm-1', '.r-0000000000aa.json.abc.tmp'],
  ['-rf', 'r-0000000000aa'],
  ['vm 1', 'r-0000000000aa'],
  ['vm-1', 'r-1\u0000x'],
  ['vm-1', 'r-1\nx'],
  ['vm\\1', 'r-0000000000aa'],
  ['vm-1', 'ré'],
  ['v'.repeat(129), 'r-0000000000aa'],
];

for (const [machine, reservationId] of tricks) {
  test(`names refused: ${JSON.stringify(machine)} / ${JSON.stringify(reservationId)}`, async (t) => {
    const journal = new ProvisioningJournal(journalDir(t));
    t.throws(() => journal.file(machine, reservationId), { instanceOf: JournalNameError });
    await t.throwsAsync(journal.read(machine, reservationId), { instanceOf: JournalNameError });
    await t.throwsAsync(journal.write({ ...record, machine, reservationId }), { instanceOf: JournalNameError });
    await t.throwsAsync(journal.remove(machine, reservationId), { instanceOf: JournalNameError });
    t.deepEqual(readdirSync(journal.root), [], 'nothing was written');
  });
}

for (const [machine, reservationId] of [
  ['vm-1', 'r-0000000000aa'],
  ['board_2.a', 'r-1'],
  ['A', 'x'.repeat(128)],
]) {
  test(`names accepted: ${machine} / ${reservationId.slice(0, 20)}`, async (t) => {
    const journal = new ProvisioningJournal(journalDir(t));
    t.is(path.dirname(path.dirname(journal.file(machine, reservationId))), path.resolve(journal.root));
    await journal.write({ ...record, machine, reservationId });
    const read = await journal.read(machine, reservationId);
    t.deepEqual(read && 'record' in read ? read.record : undefined, { ...record, machine, reservationId });
    await journal.remove(machine, reservationId);
    t.is(await journal.read(machine, reservationId), undefined);
    t.deepEqual(readdirSync(journal.root), [], "the machine's folder goes with its last record");
  });
}

test('a reader never sees half a record while it is rewritten', async (t) => {
  const journal = new ProvisioningJournal(journalDir(t));
  // Records large enough that a plain write would be seen half done.
  const big = (n: number): ProvisioningRecord => ({ ...record, detail: { n, padding: String(n % 10).repeat(1 << 20) } });
  await journal.write(big(0));
  let writing = true;
  const reads: number[] = [];
  const reader = (async () => {
    while (writing) {
      const text = readFileSync(journal.file('vm-1', 'r-0000000000aa'), 'utf8');
      const parsed = parseRecord(text, 'vm-1', 'r-0000000000aa');
      if (!('record' in parsed)) throw new Error(`a reader saw an unreadable record: ${parsed.problem}`);
      reads.push((parsed.record.detail as { n: number }).n);
      await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  for (let n = 1; n <= 20; n++) await journal.write(big(n));
  writing = false;
  await t.notThrowsAsync(reader);
  t.true(reads.length > 0);
  t.deepEqual(
    reads,
    [...reads].sort((a, b) => a - b),
    'each read saw a whole record, in the order written',
  );
  t.deepEqual(readdirSync(path.join(journal.root, 'vm-1')), ['r-0000000000aa.json'], 'no temporary file is left');
});

test('a crash in the middle of a write leaves the old record and a temporary file that is not a record, removed by a clean listing', async (t) => {
  const journal = new ProvisioningJournal(journalDir(t));
  await journal.write(record);
  // What a kill -9 between the temporary file's write and the rename leaves.
  const leftover = path.join(journal.root, 'vm-1', '.r-0000000000aa.json.0123456789ab.tmp');
  writeFileSync(leftover, JSON.stringify({ ...record, stage: 'sshReady' }).slice(0, 30));
  const listed = await journal.list();
  t.deepEqual(
    listed.map((entry) => ('record' in entry ? entry.record : entry.problem)),
    [record],
    'only the old, whole record',
  );
  t.deepEqual(readdirSync(path.join(journal.root, 'vm-1')).sort(), ['.r-0000000000aa.json.0123456789ab.tmp', 'r-0000000000aa.json']);
  await journal.list({ clean: true });
  t.deepEqual(readdirSync(path.join(journal.root, 'vm-1')), ['r-0000000000aa.json']);
});

test('files that are not records are left alone and not listed', async (t) => {
  const journal = new ProvisioningJournal(journalDir(t));
  await journal.write(record);
  writeFileSync(path.join(journal.root, 'vm-1', 'notes.txt'), 'mine');
  writeFileSync(path.join(journal.root, 'stray.json'), '{}');
  mkdirSync(path.join(journal.root, '.trash'));
  writeFileSync(path.join(journal.root, '.trash', 'r-1.json'), '{}');
  const listed = await journal.list({ clean: true });
  t.deepEqual(
    listed.map((entry) => `${entry.machine}/${entry.reservationId}`),
    ['vm-1/r-0000000000aa'],
  );
  t.is(readFileSync(path.join(journal.root, 'vm-1', 'notes.txt'), 'utf8'), 'mine');
});

test('changes to an open record reach the disk in the order they were made', async (t) => {
  const journal = new ProvisioningJournal(journalDir(t));
  const open = new OpenRecord(journal, { ...record, stage: undefined, detail: undefined });
  // Not awaited one by one: a stage and a detail saved at once.
  await Promise.all([
    open.update({}),
    open.update({ stage: 'powerConfirmed' }),
    open.update({ detail: { port: 1 } }),
    open.update({ stage: 'bootSeen' }),
    open.update({ detail: { port: 1, pid: 7 } }),
  ]);
  const read = await journal.read('vm-1', 'r-0000000000aa');
  const onDisk = read && 'record' in read ? read.record : undefined;
  t.is(onDisk?.stage, 'bootSeen');
  t.deepEqual(onDisk?.detail, { port: 1, pid: 7 });
  t.deepEqual(onDisk, open.record);
});

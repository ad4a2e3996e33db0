// The store keeps the newest `provisioningsKept` provisionings of each machine and drops the older
// ones in the same commit, on a real SQLite file (and on PostgreSQL in the second pass).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { openDatabase, plainRows } from '../../api/db/index.js';
import { provisioningsKept, Store } from '../../api/scheduler/store.js';
import { testDatabase } from '../helpers/postgres.js';

test('each machine keeps its newest provisionings and no more', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-history-'));
  const db = await openDatabase(dir, testDatabase(dir));
  const store = new Store(db);
  t.teardown(async () => {
    await store.close();
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await store.init();
  const at = new Date('2026-01-01T00:00:00Z');
  const record = (machine: string, index: number) =>
    store.provisioning({
      machine,
      reservationId: `r-${index}`,
      allocationId: `r-${index}.0`,
      owner: 'erin',
      image: null,
      outcome: 'ready',
      code: null,
      fault: null,
      stage: null,
      counted: true,
      qualification: false,
      stages: '{}',
      startedAt: at,
      endedAt: at,
    });
  for (let index = 0; index < provisioningsKept - 5; index++) record('busy', index);
  record('quiet', 0);
  await store.flush();
  for (let index = provisioningsKept - 5; index < provisioningsKept + 20; index++) record('busy', index);
  await store.flush();

  const rows = plainRows(await db.provisionings.findAll({ raw: true, order: [['id', 'ASC']] }));
  const busy = rows.filter((row) => row.machine === 'busy').map((row) => row.reservationId);
  t.is(busy.length, provisioningsKept);
  t.is(busy[0], 'r-20', 'the oldest went');
  t.is(busy.at(-1), `r-${provisioningsKept + 19}`);
  t.deepEqual(
    rows.filter((row) => row.machine === 'quiet').map((row) => row.reservationId),
    ['r-0'],
    "another machine's history is not touched",
  );
  t.is(store.committedProvisioningId, rows.at(-1)!.id);

  // Several machines past the limit in one commit are trimmed together (one statement for four of them).
  const many = ['m0', 'm1', 'm2', 'm3', 'm4', 'm5'];
  for (const machine of many) for (let index = 0; index < provisioningsKept + 3; index++) record(machine, index);
  await store.flush();
  const after = plainRows(await db.provisionings.findAll({ raw: true, order: [['id', 'ASC']] }));
  for (const machine of many) {
    const kept = after.filter((row) => row.machine === machine).map((row) => row.reservationId);
    t.is(kept.length, provisioningsKept, machine);
    t.is(kept[0], 'r-3', `${machine}: its three oldest went`);
  }
  t.is(after.filter((row) => row.machine === 'busy').length, provisioningsKept, 'the others are as they were');
  t.is(after.filter((row) => row.machine === 'quiet').length, 1);
});

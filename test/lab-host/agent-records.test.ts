// The agent's start against the provisioning records a crash left: records of reservations that
// are over are released (a record that cannot be read, corrupt or of an unknown version, is
// reported and released as a leftover, never a reason to stop), and a record of a machine the
// agent no longer serves is reported and kept.
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { embeddedConfig } from '../../api/config.js';
import { startApi, testConfig } from '../helpers/api.js';
import { readyVmRecord, writeRecordFile } from '../helpers/records.js';
import { waitFor } from '../helpers/wait.js';

test('leftover records at start: released, unreadable ones too; records of unknown machines kept', async (t) => {
  const data = mkdtempSync(path.join(os.tmpdir(), 'paddock-agent-records-'));
  const records = path.join(data, 'agent', 'provisioning');
  const files = {
    // [machine/reservation]: what the file holds, and whether the agent's first sweep removes it
    unknownVersion: ['vm-1/r-0000000000aa', JSON.stringify({ ...readyVmRecord('vm-1', 'r-0000000000aa', { port: 1 }), version: 99 }), true],
    corrupt: ['vm-2/r-0000000000bb', '{"version":1,"kind":"qe', true],
    whole: ['vm-1/r-0000000000cc', JSON.stringify(readyVmRecord('vm-1', 'r-0000000000cc', { port: 1 })), true],
    unknownMachine: ['gone-1/r-0000000000dd', JSON.stringify(readyVmRecord('gone-1', 'r-0000000000dd', { port: 1 })), false],
  } as const;
  for (const [name, text] of Object.values(files)) writeRecordFile(data, path.dirname(name), path.basename(name), text);
  // The run directory the whole record's VM used (its QEMU already gone).
  const runDir = path.join(data, 'qemu', 'vm-1', 'r-0000000000cc');
  mkdirSync(runDir, { recursive: true });
  writeFileSync(path.join(runDir, 'overlay.qcow2'), 'x');

  const api = await startApi(testConfig(embeddedConfig, data));
  t.teardown(() => api.close());
  const removed = Object.values(files).filter(([, , goes]) => goes);
  await waitFor(async () => removed.every(([name]) => !existsSync(path.join(records, `${name}.json`))), 180_000, 'the leftover records removed');
  t.false(existsSync(runDir), "the whole record's run directory was released");
  t.true(existsSync(path.join(records, `${files.unknownMachine[0]}.json`)), 'the record of a machine not served is kept');

  const logs = api.logs.join('\n');
  t.regex(logs, /provisioning record of r-0000000000aa on vm-1 is unreadable \(unknown record version 99\): released as a leftover/);
  t.regex(logs, /provisioning record of r-0000000000bb on vm-2 is unreadable \(corrupt: not JSON\): released as a leftover/);
  t.regex(logs, /removing traces of ended reservation r-0000000000cc from vm-1/);
  t.regex(logs, /provisioning record of r-0000000000dd is on gone-1, a machine this agent does not serve now: left alone/);
  t.notRegex(logs, /leak sweep failed/);
});

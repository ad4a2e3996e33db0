// The simlab benchmark in its quick form (2 lab hosts of 5 sim boards against 1 of 5, a few hundred
// reserve+release cycles each): it runs the real server and agents to the end, prints its figures,
// and its replay of the stored history finds no machine in two live reservations. No timing is
// asserted: the figures are the benchmark's to show, not the test's to judge.
import test from 'ava';
import { spawn } from 'node:child_process';

function simlab(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/simlab.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

test('the quick simlab replays its history without a double allocation and prints its figures', async (t) => {
  t.timeout(280_000);
  const run = await simlab(['--quick', '--json']);
  t.is(run.code, 0, run.stderr.slice(-3000));
  const report = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as {
    doubleAllocations: number;
    labs: {
      machines: number;
      cycles: number;
      cyclesPerSecond: number;
      rssMiB: number[];
      machineCpuMsPerCycle: number;
      machineBusyShare: number;
      replay: { grants: number; releases: number; doubleAllocations: number };
    }[];
    ratios: { cpuPerCycle: number; allocationLatency: number };
  };
  t.is(report.doubleAllocations, 0);
  t.deepEqual(
    report.labs.map((lab) => lab.machines),
    [5, 10],
  );
  for (const lab of report.labs) {
    t.true(lab.cycles >= 300, `${lab.cycles} cycles at ${lab.machines} machines`);
    t.true(lab.replay.grants >= lab.cycles, `${lab.replay.grants} grants replayed for ${lab.cycles} cycles`);
    t.is(lab.replay.doubleAllocations, 0);
    t.true(lab.cyclesPerSecond > 0 && lab.rssMiB[0] > 0);
  }
  t.true(Number.isFinite(report.ratios.cpuPerCycle) && Number.isFinite(report.ratios.allocationLatency));
  t.regex(run.stderr, /machines +agents +cycles +cycles\/s/);
  t.regex(run.stderr, /per-allocation cost, 10 machines to 5 \(baseline, same run\): server CPU per cycle \d/);
  t.regex(run.stderr, /no machine was ever in two live reservations/);
  t.regex(
    run.stderr,
    /the whole machine \(\d+ cores\) while measuring: \d+ % busy at 5 machines, [\d.]+ ms of CPU per cycle \(server [\d.]+, benchmark [\d.]+, the database and the rest [\d.]+\): at most \d+ cycles\/s here/,
  );
  for (const lab of report.labs)
    t.true(lab.machineCpuMsPerCycle > 0 && lab.machineBusyShare > 0 && lab.machineBusyShare <= 1, 'the whole machine was measured');
});

test('bad options are refused with a reason before anything starts', async (t) => {
  const servers = await simlab(['--servers', '2']);
  t.is(servers.code, 2);
  t.regex(servers.stderr, /--servers 2: several servers share one database; give it with --database postgres:\/\//);
  const clients = await simlab(['--clients', '1e9x']);
  t.is(clients.code, 2);
  t.regex(clients.stderr, /--clients "1e9x": a whole number from 1 to 1000/);
  const database = await simlab(['--database', 'mysql://db/paddock']);
  t.is(database.code, 2);
  t.regex(database.stderr, /--database is a postgres:\/\/… URL/);
  const unknown = await simlab(['--machines', '5']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /simlab: Unknown option '--machines'/);
});

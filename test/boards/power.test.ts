// Board power against real parts: the real pdudaemon (HTTP API, localcmdline PDUs running a fake
// port script), real shell commands, and a real snmpd whose `pass` script acts as an APC PDU's
// outlet column. Checks serialization per PDU, the minimum off-time (also across instances and
// across a process restart), read-back mismatches, and that errors are clear and keep the SNMP
// community out.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import test from 'ava';
import {
  createPowerDriver,
  PowerControl,
  PowerError,
  powerSettingsSchema,
  type PowerClock,
  type PowerObserver,
  type PowerSettings,
} from '../../boards/power/index.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const portScript = path.join(fixtures, 'pdu-port.sh');
const outletScript = path.join(fixtures, 'apc-outlet.sh');
const APC_COLUMN = '1.3.6.1.4.1.318.1.1.12.3.3.1.1.4';
const sh = (text: string) => `'${text.replaceAll("'", `'\\''`)}'`;
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let work: string;
test.before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'paddock-power-'));
});
test.after.always(async () => {
  await stopAll();
  if (work) await rm(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Child processes (pdudaemon, snmpd): stopped in teardown, whatever happened.

const children = new Set<ChildProcess>();
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
  children.delete(child);
}
const stopAll = () => Promise.all([...children].map(stop));

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

interface Pdudaemon {
  url: string;
  log: string;
  dir: (pdu: string) => string;
  process: ChildProcess;
}

/** The real pdudaemon with an HTTP listener on a free port and localcmdline PDUs running pdu-port.sh. */
async function startPdudaemon(name: string, pdus: string[]): Promise<Pdudaemon> {
  const base = path.join(work, name);
  const dir = (pdu: string) => path.join(base, pdu);
  const port = await freePort();
  const config = {
    daemon: { hostname: '127.0.0.1', port, logging_level: 'DEBUG', listener: 'http' },
    // localcmdline runs `cmd % port`: a literal % would have to be written %%.
    pdus: Object.fromEntries(
      pdus.map((pdu) => [
        pdu,
        {
          driver: 'localcmdline',
          retries: 1,
          cmd_on: `/bin/sh ${sh(portScript)} on %s ${sh(dir(pdu)).replaceAll('%', '%%')}`,
          cmd_off: `/bin/sh ${sh(portScript)} off %s ${sh(dir(pdu)).replaceAll('%', '%%')}`,
        },
      ]),
    ),
  };
  const conf = `${base}.json`;
  const log = `${base}.log`;
  await writeFile(conf, JSON.stringify(config, null, 2));
  const child = spawn('pdudaemon', ['--conf', conf, '--logfile', log], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr?.on('data', (chunk) => (stderr += chunk));
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`pdudaemon exited with ${child.exitCode}: ${stderr}`);
        return canConnect(port);
      },
      120_000,
      `pdudaemon listening on ${port}`,
    );
  } catch (error) {
    await stop(child);
    throw error;
  }
  return { url: `http://127.0.0.1:${port}`, log, dir, process: child };
}

interface Action {
  port: number;
  action: string;
  start: number;
  end: number;
}

/** The commands pdu-port.sh ran in `dir`, in start order. */
async function actions(dir: string): Promise<Action[]> {
  const text = await readFile(path.join(dir, 'actions.log'), 'utf8').catch(() => '');
  const open = new Map<string, Action>();
  const done: Action[] = [];
  for (const line of text.split('\n').filter(Boolean)) {
    const [kind, port, action, at] = line.split(' ');
    const key = `${port} ${action}`;
    if (kind === 'start') open.set(key, { port: Number(port), action, start: Number(at), end: NaN });
    else {
      const entry = open.get(key)!;
      entry.end = Number(at);
      open.delete(key);
      done.push(entry);
    }
  }
  return done.sort((a, b) => a.start - b.start);
}

const portState = (dir: string, port: number) =>
  readFile(path.join(dir, `port-${port}`), 'utf8').then(
    (text) => text.trim(),
    () => 'never switched',
  );

function pdudaemonControl(daemon: Pdudaemon, pdu: string, port: number, options: { board?: string; minOffTimeMs?: number; clock?: PowerClock } = {}) {
  const settings = powerSettingsSchema.parse({ driver: 'pdudaemon', url: daemon.url, pdu, port, timeout: 20 });
  return new PowerControl(createPowerDriver(settings), {
    board: options.board ?? `${pdu}-${port}`,
    minOffTimeMs: options.minOffTimeMs,
    ...(options.clock ? { clock: options.clock } : {}),
  });
}

/**
 * A clock that moves only when told to or when the off-time is waited, recording each wait: the
 * off-time arithmetic is checked exactly, whatever else the machine is doing.
 */
function virtualClock() {
  const clock = {
    at: 1_000_000,
    sleeps: [] as number[],
    now: () => clock.at,
    advance(ms: number) {
      clock.at += ms;
    },
    async sleep(ms: number) {
      clock.sleeps.push(ms);
      clock.at += ms;
    },
  };
  return clock;
}

// One pdudaemon for the pdudaemon tests; each test uses its own PDU.
let daemon: Promise<Pdudaemon> | undefined;
const sharedDaemon = () => (daemon ??= startPdudaemon('pdudaemon', ['basic', 'serial', 'offtime', 'remainder']));

// ---------------------------------------------------------------------------------------------
// Settings

test('settings: defaults filled, unknown keys and unknown drivers rejected', (t) => {
  t.deepEqual(powerSettingsSchema.parse({ driver: 'pdudaemon', pdu: 'pdu01', port: 1 }), {
    driver: 'pdudaemon',
    url: 'http://127.0.0.1:16421',
    pdu: 'pdu01',
    port: 1,
    timeout: 60,
  });
  t.deepEqual(powerSettingsSchema.parse({ driver: 'command', on: 'relay 1 on', off: 'relay 1 off' }), {
    driver: 'command',
    on: 'relay 1 on',
    off: 'relay 1 off',
    timeout: 30,
    pdu: 'command',
  });
  t.deepEqual(powerSettingsSchema.parse({ driver: 'snmp', host: 'pdu.lab', outlet: 4, version: 1 }), {
    driver: 'snmp',
    host: 'pdu.lab',
    port: 161,
    community: 'private',
    version: '1',
    outlet: 4,
    timeout: 5,
  });
  t.false(powerSettingsSchema.safeParse({ driver: 'pdudaemon', pdu: 'pdu01', port: 1, prot: 2 }).success);
  t.false(powerSettingsSchema.safeParse({ driver: 'snmp', host: 'pdu.lab', outlet: 4, version: '3' }).success);
  t.false(powerSettingsSchema.safeParse({ driver: 'pdudaemon', url: 'ftp://x', pdu: 'pdu01', port: 1 }).success);
  t.false(powerSettingsSchema.safeParse({ driver: 'ipmi', host: 'x' }).success);
});

// ---------------------------------------------------------------------------------------------
// pdudaemon

test('pdudaemon: on and off reach the PDU command; the state is tracked from the commands', async (t) => {
  const pd = await sharedDaemon();
  const control = pdudaemonControl(pd, 'basic', 3);
  t.is(control.state, 'unknown');
  t.is(control.driver.readState, undefined, 'pdudaemon cannot report a state');

  await control.on();
  t.is(await portState(pd.dir('basic'), 3), 'on');
  t.is(control.state, 'on');
  await control.off();
  t.is(await portState(pd.dir('basic'), 3), 'off');
  t.is(control.state, 'off');
  t.deepEqual(
    (await actions(pd.dir('basic'))).map((a) => `${a.port} ${a.action}`),
    ['3 on', '3 off'],
  );
});

test('pdudaemon: an unknown PDU is a PowerError naming the PDU, the port and the reply', async (t) => {
  const pd = await sharedDaemon();
  const control = pdudaemonControl(pd, 'nosuchpdu', 7);
  const error = await t.throwsAsync(control.on(), { instanceOf: PowerError });
  t.regex(error.message, /^nosuchpdu port 7: .*refused "on": 500 Invalid request/);
  t.is(control.state, 'unknown');
});

test('pdudaemon: two boards on one PDU never overlap; the second request is sent after the first reply', async (t) => {
  const pd = await sharedDaemon();
  const boardA = pdudaemonControl(pd, 'serial', 1);
  const boardB = pdudaemonControl(pd, 'serial', 2);
  await Promise.all([boardA.on(), boardB.on(), boardA.off(), boardB.off()]);

  const done = await actions(pd.dir('serial'));
  t.is(done.length, 4);
  for (let index = 1; index < done.length; index++) {
    t.true(done[index].start >= done[index - 1].end, `command ${index} started before command ${index - 1} ended: ${JSON.stringify(done)}`);
  }
  // pdudaemon serializes per PDU on its own; the HTTP requests show that Paddock waited too. Each
  // request after the first reached pdudaemon only once the previous command had ended (log times
  // are local, with milliseconds).
  const requests = (await readFile(pd.log, 'utf8'))
    .split('\n')
    .map((line) => /^(\S+) (\S+),(\d{3}) .*Handling HTTP request .*hostname=serial&port=(\d)/.exec(line))
    .filter((match) => match !== null)
    .map((match) => new Date(`${match[1]}T${match[2]}.${match[3]}`).getTime());
  t.is(requests.length, 4);
  for (let index = 1; index < requests.length; index++) {
    t.true(
      requests[index] >= done[index - 1].end - 2,
      `request ${index} arrived ${done[index - 1].end - requests[index]} ms before command ${index - 1} ended`,
    );
  }
});

test('pdudaemon: cycle() keeps the port off for the minimum off-time, waited once', async (t) => {
  const pd = await sharedDaemon();
  const control = pdudaemonControl(pd, 'offtime', 1, { minOffTimeMs: 1500 });
  await control.on();
  await control.cycle();
  t.is(control.state, 'on');
  const [, off, on] = await actions(pd.dir('offtime'));
  t.deepEqual([off.action, on.action], ['off', 'on']);
  const gap = on.start - off.end;
  // Without the wait the gap is a few tens of ms.
  t.true(gap >= 1500, `off for ${gap} ms`);
  // Waited once, for the whole off-time (counted from the end of the off command).
  const clock = virtualClock();
  const counted = pdudaemonControl(pd, 'offtime', 2, { board: 'offtime-virtual', minOffTimeMs: 1500, clock });
  await counted.on();
  t.deepEqual(clock.sleeps, [], 'the first on of a board never switched off waits nothing');
  await counted.cycle();
  t.deepEqual(clock.sleeps, [1500]);
  t.is(counted.state, 'on');
});

test('pdudaemon: an on after an off waits only the remainder, also from another PowerControl for the board', async (t) => {
  const pd = await sharedDaemon();
  await pdudaemonControl(pd, 'remainder', 1, { board: 'remainder-board', minOffTimeMs: 2000 }).off();
  await delay(1200);
  const again = pdudaemonControl(pd, 'remainder', 1, { board: 'remainder-board', minOffTimeMs: 2000 });
  await again.on();
  const [off, on] = await actions(pd.dir('remainder'));
  t.deepEqual([off.action, on.action], ['off', 'on']);
  t.true(on.start - off.end >= 2000, `off for ${on.start - off.end} ms`);
  // What was waited, on a clock that moves only when told: the remainder, not the whole off-time again.
  const clock = virtualClock();
  await pdudaemonControl(pd, 'remainder', 2, { board: 'remainder-virtual', minOffTimeMs: 2000, clock }).off();
  clock.advance(1200);
  await pdudaemonControl(pd, 'remainder', 2, { board: 'remainder-virtual', minOffTimeMs: 2000, clock }).on();
  t.deepEqual(clock.sleeps, [800]);
  clock.advance(5000);
  await pdudaemonControl(pd, 'remainder', 2, { board: 'remainder-virtual', minOffTimeMs: 2000, clock }).off();
  clock.advance(2500);
  await pdudaemonControl(pd, 'remainder', 2, { board: 'remainder-virtual', minOffTimeMs: 2000, clock }).on();
  t.deepEqual(clock.sleeps, [800], 'an on after the whole off-time has passed waits nothing');
});

test('pdudaemon: a stopped daemon is a PowerError saying it is unreachable', async (t) => {
  const pd = await startPdudaemon('stopped', ['pdu01']);
  const control = pdudaemonControl(pd, 'pdu01', 1);
  await control.on();
  await stop(pd.process);
  const error = await t.throwsAsync(control.off(), { instanceOf: PowerError });
  t.is(error.message, `pdu01 port 1: the PDU daemon at ${pd.url} is unreachable (connection refused; is pdudaemon running?)`);
  t.is(control.state, 'unknown');
});

test('pdudaemon: the check sees a daemon that answers without switching anything, and one that is down', async (t) => {
  const pd = await startPdudaemon('checked', ['pdu01']);
  const driver = pdudaemonControl(pd, 'pdu01', 1).driver;
  await t.notThrowsAsync(driver.check!(AbortSignal.timeout(20_000)));
  t.deepEqual(await actions(pd.dir('pdu01')), [], 'no port was switched');
  t.false((await readFile(pd.log, 'utf8')).includes('Handling HTTP request'), 'no power request reached pdudaemon');
  await stop(pd.process);
  const error = await t.throwsAsync(driver.check!(AbortSignal.timeout(20_000)), { instanceOf: PowerError });
  t.is(error.message, `pdu01 port 1: the PDU daemon at ${pd.url} is unreachable (connection refused; is pdudaemon running?)`);
});

// ---------------------------------------------------------------------------------------------
// command

function commandControl(
  settings: Omit<Extract<PowerSettings, { driver: 'command' }>, 'driver' | 'timeout' | 'pdu'> & { pdu?: string; timeout?: number },
  board: string,
  minOffTimeMs?: number,
  observer?: PowerObserver,
) {
  const parsed = powerSettingsSchema.parse({ driver: 'command', ...settings });
  return new PowerControl(createPowerDriver(parsed), { board, minOffTimeMs, ...(observer ? { observe: { driver: 'command', observer } } : {}) });
}

test('command: on, off and state through real shell commands on a state file', async (t) => {
  const file = path.join(work, 'relay-1');
  const control = commandControl({ on: `echo ON > ${sh(file)}`, off: `printf ' 0\\n' > ${sh(file)}`, state: `cat ${sh(file)}` }, 'command-basic');
  await control.on();
  t.is(await readFile(file, 'utf8'), 'ON\n');
  t.is(control.state, 'on');
  t.is(await control.driver.readState!(), 'on');
  await control.off();
  t.is(control.state, 'off');
  t.is(await control.driver.readState!(), 'off');
});

test('command: a failing command is a PowerError with its stderr tail, not the command text', async (t) => {
  const control = commandControl(
    {
      on: 'TOKEN=hunter2; echo "connecting" >&2; echo "relay 7: no such device" >&2; exit 3',
      off: 'true',
    },
    'command-failing',
  );
  const error = await t.throwsAsync(control.on(), { instanceOf: PowerError });
  t.is(error.message, 'command: the on command exited with status 3: connecting | relay 7: no such device');
  t.false(error.message.includes('hunter2'));
  t.is(control.state, 'unknown');
});

test('command: a state command that disagrees is a PowerError; one that prints nonsense too', async (t) => {
  // Each command is told to the observer (the agent's metrics) as it ends: the read-back decides whether it failed.
  const observed: string[] = [];
  const observer: PowerObserver = ({ driver, operation, failed, seconds }) =>
    observed.push(`${driver} ${operation} ${failed ? 'failed' : 'ok'} ${seconds >= 0}`);
  const lying = commandControl({ on: 'true', off: 'true', state: 'echo on' }, 'command-lying', undefined, observer);
  const error = await t.throwsAsync(lying.off(), { instanceOf: PowerError });
  t.is(error.message, 'command-lying (command): commanded off but the PDU reports on');
  t.is(lying.state, 'on');
  await lying.on();

  const vague = commandControl({ on: 'true', off: 'true', state: 'echo maybe' }, 'command-vague', undefined, observer);
  const vagueError = await t.throwsAsync(vague.on(), { instanceOf: PowerError });
  t.is(vagueError.message, 'command: the state command printed "maybe", expected on or off (or 1/0)');
  t.is(vague.state, 'unknown');
  t.deepEqual(observed, ['command off failed true', 'command on ok true', 'command on failed true']);
});

test('command: a command past its timeout is killed with its children', async (t) => {
  const marker = path.join(work, 'timeout-marker');
  // The child touches the marker long after the timeout, so a busy machine cannot turn the order round.
  const control = commandControl({ on: `(sleep 4; touch ${sh(marker)}) & sleep 60`, off: 'true', timeout: 0.5 }, 'command-timeout');
  const error = await t.throwsAsync(control.on(), { instanceOf: PowerError });
  t.is(error.message, 'command: the on command did not finish within 0.5s and was killed');
  await delay(4500);
  await t.throwsAsync(access(marker), undefined, 'the background child was killed too');
});

test('command: two boards on one PDU never overlap; on two PDUs they do', async (t) => {
  const shared = path.join(work, 'command-shared');
  const separate = path.join(work, 'command-separate');
  const board = (dir: string, port: number, pdu: string) =>
    commandControl(
      { on: `/bin/sh ${sh(portScript)} on ${port} ${sh(dir)}`, off: `/bin/sh ${sh(portScript)} off ${port} ${sh(dir)}`, pdu },
      `${path.basename(dir)}-${port}`,
    );

  await Promise.all([board(shared, 1, 'relays').on(), board(shared, 2, 'relays').on(), board(shared, 3, 'relays').on()]);
  const serial = await actions(shared);
  t.is(serial.length, 3);
  for (let index = 1; index < serial.length; index++) t.true(serial[index].start >= serial[index - 1].end, JSON.stringify(serial));

  // The control: the same commands for boards on different PDUs do run together.
  await Promise.all([board(separate, 1, 'relays-a').on(), board(separate, 2, 'relays-b').on()]);
  const parallel = await actions(separate);
  t.true(parallel[1].start < parallel[0].end, JSON.stringify(parallel));
});

test('command: a signal that fires while the command waits for its PDU means it never runs', async (t) => {
  const dir = path.join(work, 'command-abort');
  // The first command holds the PDU for 3 s, long enough on a busy machine for the abort to come while it runs.
  const board = (port: number) =>
    commandControl(
      { on: `PDU_PORT_SLEEP=${port === 1 ? 3 : 0.3} /bin/sh ${sh(portScript)} on ${port} ${sh(dir)}`, off: 'true', pdu: 'abort-pdu' },
      `abort-${port}`,
    );
  const first = board(1).on();
  const reason = new Error('reservation cancelled');
  const controller = new AbortController();
  const second = board(2).on(controller.signal);
  await delay(100);
  controller.abort(reason);
  t.is(await t.throwsAsync(second), reason);
  t.deepEqual(await actions(dir), [], 'the waiting command gave up at once, while the first was still running');
  await first;
  await delay(400);
  t.deepEqual(
    (await actions(dir)).map((a) => a.port),
    [1],
  );
});

test('command: the off time survives a restart through the state file', async (t) => {
  const dir = path.join(work, 'restart');
  const stateFile = path.join(dir, 'power-state.json');
  const onLog = path.join(dir, 'on-at');
  const settings = { driver: 'command', on: `date +%s%3N > ${sh(onLog)}`, off: 'true' };
  const control = new PowerControl(createPowerDriver(powerSettingsSchema.parse(settings)), { board: 'restarted-board', minOffTimeMs: 3000, stateFile });
  const before = Date.now();
  await control.off();
  const after = Date.now();
  const stored = JSON.parse(await readFile(stateFile, 'utf8')) as { boards: Record<string, { lastOffAt: string }> };
  const offAt = Date.parse(stored.boards['restarted-board'].lastOffAt);
  t.true(offAt >= before && offAt <= after, `stored ${offAt}, off() ran from ${before} to ${after}`);

  // A new process: nothing in memory, only the file.
  const script = `
    import { createPowerDriver, PowerControl, powerSettingsSchema } from ${JSON.stringify(new URL('../../boards/power/index.ts', import.meta.url).href)};
    const control = new PowerControl(createPowerDriver(powerSettingsSchema.parse(${JSON.stringify(settings)})),
      { board: 'restarted-board', minOffTimeMs: 3000, stateFile: ${JSON.stringify(stateFile)} });
    await control.on();
  `;
  await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { timeout: 120_000 });
  const onAt = Number((await readFile(onLog, 'utf8')).trim());
  // Order, not speed: the new process switched on no earlier than the off-time the file told it.
  t.true(onAt - offAt >= 3000, `switched on ${onAt - offAt} ms after off`);
});

// ---------------------------------------------------------------------------------------------
// snmp: a real snmpd with the APC outlet column served by apc-outlet.sh

interface Snmpd {
  port: number;
  community: string;
  readOnlyCommunity: string;
  outlets: string;
}

async function startSnmpd(): Promise<Snmpd> {
  const base = path.join(work, 'snmpd');
  const outlets = path.join(base, 'outlets');
  await run('mkdir', ['-p', outlets, path.join(base, 'persistent')]);
  const community = `rw-${Math.random().toString(36).slice(2, 12)}`;
  const readOnlyCommunity = `ro-${Math.random().toString(36).slice(2, 12)}`;
  const conf = path.join(base, 'snmpd.conf');
  await writeFile(
    conf,
    [`rwcommunity ${community} 127.0.0.1`, `rocommunity ${readOnlyCommunity} 127.0.0.1`, `pass .${APC_COLUMN} /bin/sh ${outletScript}`, ''].join('\n'),
  );
  for (let attempt = 1; ; attempt++) {
    const port = await freePort(); // a free TCP port; its UDP twin is almost always free too
    // -f foreground, -Lo log to stdout, -C only our config. No MIBs (Debian ships few and
    // snmpd complains about each), and its persistent state in our folder, not /var/lib/snmp.
    const child = spawn('snmpd', ['-f', '-Lo', '-C', '-c', conf, `udp:127.0.0.1:${port}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, APC_OUTLET_DIR: outlets, SNMP_PERSISTENT_DIR: path.join(base, 'persistent'), MIBS: '', MIBDIRS: path.join(base, 'no-mibs') },
    });
    children.add(child);
    let output = '';
    child.stdout?.on('data', (chunk) => (output += chunk));
    child.stderr?.on('data', (chunk) => (output += chunk));
    try {
      await waitFor(
        async () => {
          if (child.exitCode !== null) throw new Error(`snmpd exited with ${child.exitCode}: ${output}`);
          return output.includes('NET-SNMP version');
        },
        120_000,
        'snmpd started',
      );
      return { port, community, readOnlyCommunity, outlets };
    } catch (error) {
      await stop(child);
      if (attempt === 3) throw error;
    }
  }
}

let snmpd: Promise<Snmpd> | undefined;
const sharedSnmpd = () => (snmpd ??= startSnmpd());

function snmpControl(agent: Snmpd, outlet: number, extra: Record<string, unknown> = {}) {
  const settings = powerSettingsSchema.parse({ driver: 'snmp', host: '127.0.0.1', port: agent.port, community: agent.community, outlet, timeout: 2, ...extra });
  return new PowerControl(createPowerDriver(settings), { board: `apc-${outlet}` });
}

/** The outlet column as the net-snmp command-line tools see it. */
async function walk(agent: Snmpd): Promise<string[]> {
  const { stdout } = await run('snmpwalk', ['-v2c', '-c', agent.community, '-On', '-Oq', `127.0.0.1:${agent.port}`, `.${APC_COLUMN}`], {
    env: { ...process.env, MIBS: '', SNMP_PERSISTENT_DIR: path.join(work, 'snmpd', 'persistent') },
  });
  return stdout
    .trim()
    .split('\n')
    .map((line) => line.replace(`.${APC_COLUMN}.`, ''));
}

test('snmp: on, off and the state read back through a real snmpd', async (t) => {
  const agent = await sharedSnmpd();
  const control = snmpControl(agent, 1);
  t.is(await control.driver.readState!(), 'off');
  await control.on();
  t.is(control.state, 'on');
  t.is((await readFile(path.join(agent.outlets, 'outlet-1'), 'utf8')).trim(), '1');
  t.is((await walk(agent))[0], '1 1');
  await control.off();
  t.is(control.state, 'off');
  t.is((await walk(agent))[0], '1 2');
  t.is(await control.driver.readState!(), 'off');
});

test('snmp: SNMP version 1 works the same', async (t) => {
  const agent = await sharedSnmpd();
  const control = snmpControl(agent, 2, { version: '1' });
  await control.on();
  t.is(await control.driver.readState!(), 'on');
  t.deepEqual(await walk(agent).then((rows) => rows[1]), '2 1');
});

test('snmp: a wrong community is a clear error that does not contain any community', async (t) => {
  const agent = await sharedSnmpd();
  const wrong = `wrong-${Math.random().toString(36).slice(2, 12)}`;
  const control = snmpControl(agent, 3, { community: wrong, timeout: 0.5 });
  const error = await t.throwsAsync(control.on(), { instanceOf: PowerError });
  t.is(
    error.message,
    `127.0.0.1:${agent.port} outlet 3: no SNMP reply to the SET immediateOn within 0.5s (sent 2 times); check the community, the SNMP version (2c) and that the PDU is reachable`,
  );
  t.false(JSON.stringify([error.message, error.stack, String(error.cause)]).includes(wrong));

  const readOnly = snmpControl(agent, 3, { community: agent.readOnlyCommunity });
  const refused = await t.throwsAsync(readOnly.on(), { instanceOf: PowerError });
  t.regex(refused.message, /^127\.0\.0\.1:\d+ outlet 3: the PDU refused the SET immediateOn: NoAccess.*read-only community/);
  for (const secret of [agent.community, agent.readOnlyCommunity]) t.false(JSON.stringify([refused.message, refused.stack]).includes(secret));
  t.false(
    await access(path.join(agent.outlets, 'outlet-3')).then(
      () => true,
      () => false,
    ),
    'outlet 3 was never switched',
  );
});

test('snmp: an outlet that does not switch is a read-back PowerError', async (t) => {
  const agent = await sharedSnmpd();
  await writeFile(path.join(agent.outlets, 'stuck-8'), '');
  const control = snmpControl(agent, 8);
  const error = await t.throwsAsync(control.on(), { instanceOf: PowerError });
  t.is(error.message, `apc-8 (127.0.0.1:${agent.port} outlet 8): commanded on but the PDU reports off`);
  t.is(control.state, 'off');
  t.true((await readFile(path.join(agent.outlets, 'sets.log'), 'utf8')).includes('8 1\n'), 'the SET reached the PDU');
});

test('snmp: an outlet the PDU does not have is a clear error', async (t) => {
  const agent = await sharedSnmpd();
  const control = snmpControl(agent, 42);
  const error = await t.throwsAsync(control.driver.readState!(), { instanceOf: PowerError });
  t.is(error.message, `127.0.0.1:${agent.port} outlet 42: the PDU refused the GET of the outlet state: NoSuchInstance: ${APC_COLUMN}.42 (no such outlet?)`);
  const setError = await t.throwsAsync(control.on(), { instanceOf: PowerError });
  t.regex(setError.message, /outlet 42: the PDU refused the SET immediateOn: NotWritable/);
});

test('snmp: the check reads the outlet without switching it; an outlet the PDU lacks, a host that does not resolve and a silent port are problems', async (t) => {
  const agent = await sharedSnmpd();
  await t.notThrowsAsync(snmpControl(agent, 5).driver.check!(AbortSignal.timeout(20_000)));
  const sets = await readFile(path.join(agent.outlets, 'sets.log'), 'utf8').catch(() => '');
  t.false(/^5 /m.test(sets), 'outlet 5 was not SET');
  t.false(
    await access(path.join(agent.outlets, 'outlet-5')).then(
      () => true,
      () => false,
    ),
  );
  const missing = await t.throwsAsync(snmpControl(agent, 42).driver.check!(AbortSignal.timeout(20_000)), { instanceOf: PowerError });
  t.regex(missing.message, /outlet 42: the PDU refused the GET of the outlet state: NoSuchInstance/);
  const unresolved = await t.throwsAsync(snmpControl(agent, 1, { host: 'pdu.invalid' }).driver.check!(AbortSignal.timeout(20_000)), {
    instanceOf: PowerError,
  });
  t.is(unresolved.message, `pdu.invalid:${agent.port} outlet 1: the PDU's address pdu.invalid does not resolve (the name does not resolve)`);
  // Nothing answers on this port: the check gives up when its signal fires, before the SNMP timeout.
  const silent = await t.throwsAsync(snmpControl(agent, 1, { port: await freePort(), timeout: 60 }).driver.check!(AbortSignal.timeout(500)), {
    instanceOf: PowerError,
  });
  t.regex(silent.message, /outlet 1: no SNMP reply within the check's time limit$/);
});

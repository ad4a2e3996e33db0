// An emulated lab for board tests: N arm64 boards (QEMU virt + Debian's U-Boot, see
// board-power.sh), each with a persistent serial line (a socat pty pair: Paddock opens one end
// with serialport, QEMU attaches to the other at every power-on, like a USB-serial adapter), and
// a real pdudaemon whose localcmdline PDU switches them. Only this fixture knows the boards are
// QEMU; Paddock drives them as boards.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import got from 'got';
import { freePort } from '../ports.js';

const run = promisify(execFile);
export const powerScript = path.resolve(import.meta.dirname, 'board-power.sh');

export interface LabBoard {
  /** Outlet number on the lab PDU. */
  outlet: number;
  /** The serial device Paddock opens, or the TCP console (`host:port`, as ser2net offers one). */
  tty: string;
  tcp?: string;
  sshPort: number;
  dir: string;
}

export interface Lab {
  dir: string;
  boards: LabBoard[];
  pdu: { url: string; name: string };
  /**
   * The YAML of a board machine entry for Paddock's config. Without `tftpRoot` the board is staged
   * in its lab host's own root; `serverIp` (default 127.0.0.1) is where the board asks for files, and
   * with it where that root is served: QEMU's user network takes the board's TFTP to that host address.
   */
  boardYaml(board: LabBoard, options?: BoardYamlOptions): string;
  /** Stops pdudaemon (to test a PDU that is down). */
  stopPdu(): Promise<void>;
  stop(): Promise<void>;
}

export interface BoardYamlOptions {
  name?: string;
  labels?: Record<string, string>;
  ssh?: boolean;
  tftpRoot?: string;
  serverIp?: string;
  labHost?: string;
  extra?: string;
}

export interface LabOptions {
  /** Outlets whose console is a TCP port (socat stands in for ser2net) instead of a serial device. */
  tcpConsoles?: number[];
  /** Outlets switched by the lab's APC PDU (a real snmpd) instead of pdudaemon. */
  snmpOutlets?: number[];
  /** Outlets whose board has storage (a 64 MiB virtio disk) that images can be flashed to. */
  storageOutlets?: number[];
  /** Outlets whose board is a 32-bit armv7 one (qemu-system-arm, cortex-a15, bootz). */
  armv7Outlets?: number[];
}

export async function startLab(count: number, labOptions: LabOptions = {}): Promise<Lab> {
  const tcpConsoles = labOptions.tcpConsoles ?? [];
  const snmpOutlets = labOptions.snmpOutlets ?? [];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-lab-'));
  const children: ChildProcess[] = [];
  const boards: LabBoard[] = [];
  for (let outlet = 1; outlet <= count; outlet++) {
    const boardDir = path.join(dir, `board${outlet}`);
    mkdirSync(boardDir);
    const sshPort = await freePort();
    writeFileSync(path.join(boardDir, 'ssh-port'), String(sshPort));
    const tty = path.join(boardDir, 'tty');
    const qemuSide = `pty,raw,echo=0,link=${path.join(boardDir, 'tty.qemu')}`;
    if (tcpConsoles.includes(outlet)) {
      // Like ser2net: the serial line on a TCP port, kept across connections.
      const consolePort = await freePort();
      children.push(
        spawn('socat', [`TCP-LISTEN:${consolePort},bind=127.0.0.1,reuseaddr,fork`, `FILE:${path.join(boardDir, 'line')},raw,echo=0`], { stdio: 'ignore' }),
      );
      children.push(spawn('socat', [`pty,raw,echo=0,link=${path.join(boardDir, 'line')}`, qemuSide], { stdio: 'ignore' }));
      boards.push({ outlet, tty, tcp: `127.0.0.1:${consolePort}`, sshPort, dir: boardDir });
    } else {
      children.push(spawn('socat', [`pty,raw,echo=0,link=${tty}`, qemuSide], { stdio: 'ignore' }));
      boards.push({ outlet, tty, sshPort, dir: boardDir });
    }
    if (labOptions.storageOutlets?.includes(outlet)) await run('truncate', ['-s', '64M', path.join(boardDir, 'disk.img')]);
    if (labOptions.armv7Outlets?.includes(outlet)) writeFileSync(path.join(boardDir, 'armv7'), '');
    for (let waited = 0; !existsSync(path.join(boardDir, 'tty.qemu')); waited += 50) {
      if (waited > 5000) throw new Error('socat did not make the pty pair');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  const pduPort = await freePort();
  const conf = path.join(dir, 'pdudaemon.conf');
  writeFileSync(
    conf,
    JSON.stringify({
      daemon: { hostname: '127.0.0.1', port: pduPort, logging_level: 'INFO', listener: 'http' },
      pdus: { 'lab-pdu': { driver: 'localcmdline', cmd_on: `${powerScript} ${dir} on %s`, cmd_off: `${powerScript} ${dir} off %s` } },
    }),
  );
  let pdudaemon: ChildProcess | undefined = spawn('pdudaemon', ['--conf', conf, '--logfile', path.join(dir, 'pdudaemon.log')], { stdio: 'ignore' });
  const url = `http://127.0.0.1:${pduPort}`;
  for (let waited = 0; ; waited += 100) {
    try {
      await got.get(`${url}/power/control/off`, { searchParams: { hostname: 'lab-pdu', port: 99 }, retry: { limit: 0 }, timeout: { request: 2000 } });
      break;
    } catch {
      if (waited > 15_000) throw new Error('pdudaemon did not start');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  // The APC PDU: snmpd serving the outlet column through apc-pdu.sh, which switches the boards.
  let snmp: { port: number; community: string } | undefined;
  if (snmpOutlets.length > 0) {
    const community = `lab-${Math.random().toString(36).slice(2, 10)}`;
    const snmpConf = path.join(dir, 'snmpd.conf');
    writeFileSync(
      snmpConf,
      `rwcommunity ${community} 127.0.0.1\npass .1.3.6.1.4.1.318.1.1.12.3.3.1.1.4 /bin/sh ${path.join(import.meta.dirname, 'apc-pdu.sh')}\n`,
    );
    mkdirSync(path.join(dir, 'snmp'));
    const port = await freePort();
    const child = spawn('snmpd', ['-f', '-Lo', '-C', '-c', snmpConf, `udp:127.0.0.1:${port}`], {
      stdio: ['ignore', 'pipe', 'ignore'],
      env: { ...process.env, LAB_DIR: dir, SNMP_PERSISTENT_DIR: path.join(dir, 'snmp'), MIBS: '', MIBDIRS: path.join(dir, 'snmp') },
    });
    children.push(child);
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    for (let waited = 0; !output.includes('NET-SNMP version'); waited += 50) {
      if (waited > 10_000 || child.exitCode !== null) throw new Error(`snmpd did not start: ${output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    snmp = { port, community };
  }

  const stopPdu = async () => {
    const child = pdudaemon;
    pdudaemon = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  };

  return {
    dir,
    boards,
    pdu: { url, name: 'lab-pdu' },
    boardYaml: (board, options) =>
      [
        `  - name: ${options?.name ?? `board-${board.outlet}`}`,
        '    kind: board',
        ...(options?.labHost ? [`    labHost: ${options.labHost}`] : []),
        `    labels: ${JSON.stringify(options?.labels ?? { arch: 'arm64', type: 'qemu-virt' })}`,
        '    capacities: { cpus: 1, ram: 512MiB }',
        '    settings:',
        snmp && snmpOutlets.includes(board.outlet)
          ? `      power: { driver: snmp, host: 127.0.0.1, port: ${snmp.port}, community: "${snmp.community}", outlet: ${board.outlet}, timeout: 10 }`
          : `      power: { driver: pdudaemon, url: "${url}", pdu: lab-pdu, port: ${board.outlet} }`,
        board.tcp ? `      console: { tcp: "${board.tcp}" }` : `      console: { device: "${board.tty}", baud: 115200 }`,
        `      boot: { serverIp: ${options?.serverIp ?? '127.0.0.1'}, ip: 10.0.2.15, gatewayIp: 10.0.2.2${options?.tftpRoot ? `, tftpRoot: "${options.tftpRoot}"` : ''}${existsSync(path.join(board.dir, 'disk.img')) ? ', storage: { interface: virtio }' : ''}${existsSync(path.join(board.dir, 'armv7')) ? ', command: bootz' : ''} }`,
        ...(options?.ssh === false ? [] : [`      ssh: { host: 127.0.0.1, port: ${board.sshPort} }`]),
        '      minOffTime: 1',
        ...(options?.extra ? [options.extra] : []),
      ].join('\n'),
    stopPdu,
    async stop() {
      await stopPdu();
      await Promise.all(boards.map((board) => run(powerScript, [dir, 'off', String(board.outlet)]).catch(() => undefined)));
      // The lab's daemons (socat, snmpd) are gone before their files are: snmpd writes its state on the way out.
      await Promise.all(
        children.map(
          (child) =>
            new Promise<void>((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve();
              child.once('exit', () => resolve());
              child.kill('SIGTERM');
            }),
        ),
      );
      rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
    },
  };
}

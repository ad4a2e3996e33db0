// The U-Boot strategy, driven on the serial console after power-on: catch the autoboot prompt and
// stop it, set the network and the TFTP server, fetch the kernel, initrd and dtb, set the kernel
// command line (with the reservation's key), boot, and see the kernel start. Each step has its
// own timeout; a failure says which step, whose fault it is, and carries the console tail.
import type { BoardStorage, BootSettings } from '../board.js';
import { ExpectTimeout, type Console } from '../console/types.js';

export type BootStep = 'bootloader' | 'network' | 'tftp' | 'flash' | 'kernel';

export class BootError extends Error {
  constructor(
    readonly step: BootStep,
    readonly code: string,
    readonly fault: 'infrastructure' | 'request',
    message: string,
  ) {
    super(message);
    this.name = 'BootError';
  }
}

/** The board's network during boot; without `ip` U-Boot asks DHCP. */
export type UbootNetwork = Pick<BootSettings, 'serverIp' | 'ip' | 'netmask' | 'gatewayIp'>;

export interface UbootBoot {
  console: Console;
  prompt: string;
  network: UbootNetwork;
  /**
   * RAM boot: TFTP paths of the kernel, initrd and dtb. Flash boot: the TFTP path of a raw disk
   * image written to the board's storage, which then boots from it: `/boot/kernel`, and if there,
   * `/boot/initrd` and `/boot/env.txt` (U-Boot environment text, e.g. `bootargs=console=ttyAMA0`).
   */
  files: { kernel: string; initrd?: string; dtb?: string } | { disk: string; storage: BoardStorage };
  /** The kernel file is gzip-compressed (booti then needs a decompression buffer). */
  kernelCompressed: boolean;
  bootCommand: BootSettings['command'];
  /** Where a compressed kernel is unpacked (kernel_comp_addr_r). */
  decompressAddress: string;
  /** The kernel command line; when flashing, added to the `bootargs` the image's env.txt sets. */
  bootargs: string;
  timeouts: { bootloader: number; tftp: number; kernel: number };
  signal: AbortSignal;
}

const bootloaderFailures = /Unknown command|Bad Linux|Wrong Image|Bad Image|ERROR: Did not find a cmdline|Could not find|Error: /;

/**
 * From power-on to "Starting kernel": returns once U-Boot has handed over to the kernel. Every
 * string that will be typed is checked before the first keystroke (see refuseUntypable).
 */
export async function ubootBoot(boot: UbootBoot): Promise<void> {
  refuseUntypable(boot);
  const { console: line, signal } = boot;
  const prompt = new RegExp(`(^|\\n)${escape(boot.prompt)}`);
  const step = async <T>(name: BootStep, work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } catch (error) {
      if (error instanceof BootError) throw error;
      if (error instanceof ExpectTimeout) {
        const fault = name === 'kernel' ? 'request' : 'infrastructure';
        const code = name === 'bootloader' ? 'bootloader_timeout' : name === 'kernel' ? 'kernel_timeout' : `${name}_timeout`;
        throw new BootError(name, code, fault, `${name} step: ${error.message}; console tail:\n${error.tail}`);
      }
      throw error;
    }
  };
  // The prompt that counts comes after U-Boot echoed the command: a prompt printed earlier (an
  // extra one after the autoboot was stopped, say) must not be taken for this command's.
  const run = async (name: BootStep, command: string, timeoutMs: number, check?: (output: string) => string | undefined) => {
    line.mark();
    await line.send(`${typable(command, 'a U-Boot command')}\n`);
    const done = new RegExp(`${escape(command)}\\r?\\n((?:[\\s\\S]*?\\n)?)${escape(boot.prompt)}`);
    const { match } = await line.expect([done], timeoutMs, `the U-Boot prompt after "${command.split(' ')[0]}"`, signal);
    const before = match[1];
    const problem = check?.(before) ?? (bootloaderFailures.test(before) ? before.trim().split('\n').slice(-2).join(' ') : undefined);
    if (problem) {
      const fault: 'infrastructure' | 'request' = name === 'kernel' ? 'request' : 'infrastructure';
      throw new BootError(name, `${name}_failed`, fault, `${name} step: U-Boot: ${command}: ${problem.trim()}; console tail:\n${line.tail()}`);
    }
    return before;
  };

  await step('bootloader', async () => {
    await line.expect([/Hit any key to stop autoboot|autoboot in \d|stop autoboot/i, prompt], boot.timeouts.bootloader, 'the U-Boot autoboot prompt', signal);
    await line.send(' ');
    await line.expect([prompt], 5000, 'the U-Boot prompt', signal);
    await run('bootloader', 'echo paddock-attached', 5000);
  });

  await step('network', async () => {
    await run('network', 'setenv autoload no', 5000);
    if (boot.network.ip) {
      await run('network', `setenv ipaddr ${boot.network.ip}`, 5000);
      await run('network', `setenv netmask ${boot.network.netmask}`, 5000);
      if (boot.network.gatewayIp) await run('network', `setenv gatewayip ${boot.network.gatewayIp}`, 5000);
    } else {
      await run('network', 'dhcp', boot.timeouts.tftp, (output) =>
        /DHCP client bound|Bytes transferred|bound to/i.test(output) ? undefined : `no DHCP answer: ${output.trim().split('\n').pop()}`,
      );
    }
    await run('network', `setenv serverip ${boot.network.serverIp}`, 5000);
  });

  const tftp = (address: string, file: string) =>
    run('tftp', `tftpboot ${address} ${file}`, boot.timeouts.tftp, (output) => {
      if (/Bytes transferred = \d+/.test(output)) return undefined;
      const reason = /TFTP error: [^\n]*|File not found|Retry count exceeded[^\n]*|timeout/i.exec(output)?.[0];
      return `${file}: ${reason ?? 'the transfer did not finish'}`;
    });

  const files = boot.files;
  let initrd = false;
  if ('disk' in files) {
    await step('flash', () => flash(files));
  } else {
    await step('tftp', async () => {
      await tftp('${kernel_addr_r}', files.kernel);
      if (boot.kernelCompressed) await decompression();
      if (files.initrd) {
        await tftp('${ramdisk_addr_r}', files.initrd);
        await run('tftp', 'setenv paddock_initrd ${ramdisk_addr_r}:${filesize}', 5000);
        initrd = true;
      }
      if (files.dtb) await tftp('${fdt_addr_r}', files.dtb);
    });
  }

  async function decompression(): Promise<void> {
    await run('tftp', `setenv kernel_comp_addr_r ${boot.decompressAddress}`, 5000);
    await run('tftp', 'setenv kernel_comp_size ${filesize}', 5000);
  }

  /** Writes the disk image to the storage, then loads the kernel (and initrd, env) from it. */
  async function flash(target: { disk: string; storage: BoardStorage }): Promise<void> {
    const { interface: kind, device } = target.storage;
    await tftp('${kernel_addr_r}', target.disk);
    await run('flash', 'setexpr paddock_blocks ${filesize} + 1ff', 5000);
    await run('flash', 'setexpr paddock_blocks ${paddock_blocks} / 200', 5000);
    if (kind === 'mmc') await run('flash', `mmc dev ${device}`, 10_000);
    else await run('flash', `${kind} scan`, 30_000);
    await run('flash', `${kind} write \${kernel_addr_r} 0 \${paddock_blocks}`, boot.timeouts.tftp, (output) =>
      /blocks written: OK|written: OK/.test(output) ? undefined : `writing the image to ${kind} ${device} failed: ${output.trim().split('\n').pop()}`,
    );
    // A missing file is not an error here ('' skips the generic failure check): callers look at the output.
    const load = (address: string, file: string) => run('flash', `load ${kind} ${device} ${address} ${file}`, boot.timeouts.tftp, () => '');
    if (/bytes read/.test(await load('${ramdisk_addr_r}', '/boot/env.txt'))) await run('flash', 'env import -t ${ramdisk_addr_r} ${filesize}', 5000);
    const kernel = await load('${kernel_addr_r}', '/boot/kernel');
    if (!/bytes read/.test(kernel)) {
      throw new BootError(
        'flash',
        'image_unbootable',
        'request',
        `flash step: the image has no /boot/kernel: ${kernel.trim().split('\n').pop()}; console tail:\n${line.tail()}`,
      );
    }
    await decompression(); // booti uses it only for a compressed kernel
    if (/bytes read/.test(await load('${ramdisk_addr_r}', '/boot/initrd'))) {
      await run('flash', 'setenv paddock_initrd ${ramdisk_addr_r}:${filesize}', 5000);
      initrd = true;
    }
  }

  await step('kernel', async () => {
    // U-Boot takes at most 511 characters per typed line: long command lines go in pieces.
    const args = boot.bootargs.replace(/['"$\\]/g, '');
    const pieces = args.match(/[\s\S]{1,200}/g) ?? [''];
    await run('kernel', 'disk' in files ? `setenv bootargs "\${bootargs} ${pieces[0]}"` : `setenv bootargs '${pieces[0]}'`, 5000);
    for (const piece of pieces.slice(1)) await run('kernel', `setenv bootargs "\${bootargs}${piece}"`, 5000);
    const fdt = 'dtb' in files && files.dtb ? '${fdt_addr_r}' : '${fdtcontroladdr}';
    const initrdArgument = initrd ? '${paddock_initrd}' : '-';
    line.mark();
    await line.send(`${typable(`${boot.bootCommand} \${kernel_addr_r} ${initrdArgument} ${fdt}`, 'the boot command')}\n`);
    const { index, before } = await line.expect([/Starting kernel/, prompt], boot.timeouts.kernel, 'the kernel start', signal);
    if (index === 1) {
      throw new BootError(
        'kernel',
        'image_unbootable',
        'request',
        `kernel step: U-Boot did not start the kernel: ${before.trim().split('\n').slice(-2).join(' ')}; console tail:\n${line.tail()}`,
      );
    }
  });
}

/**
 * Everything typed at U-Boot is one line of printable ASCII. A control character in a value would
 * end the line (newline), cancel it (^C) or edit it, and the rest would run as commands of its own
 * (`; reset`, another tftpboot): so a value holding one is refused before anything is typed. The
 * kernel command line comes from the image (the request's fault); the rest from the board's settings.
 */
function refuseUntypable(boot: UbootBoot): void {
  const bad = firstUntypable(boot.bootargs);
  if (bad) throw new BootError('kernel', 'image_invalid', 'request', `the kernel command line holds ${bad}: refused before anything was typed at U-Boot`);
  const { network, files } = boot;
  const settings: [string, string | undefined][] = [
    ['serverIp', network.serverIp],
    ['ip', network.ip],
    ['netmask', network.netmask],
    ['gatewayIp', network.gatewayIp],
    ['decompressAddress', boot.decompressAddress],
    ['bootCommand', boot.bootCommand],
    ...Object.entries(files).map(([name, value]): [string, string] => [name, typeof value === 'string' ? value : `${value.interface} ${value.device}`]),
  ];
  for (const [name, value] of settings) {
    const problem = value === undefined ? undefined : firstUntypable(value);
    if (problem)
      throw new BootError('bootloader', 'boot_settings_invalid', 'infrastructure', `${name} holds ${problem}: refused before anything was typed at U-Boot`);
  }
}

/** The same rule at the one place text is typed, so no caller can skip it. */
function typable(command: string, what: string): string {
  const bad = firstUntypable(command);
  if (bad) throw new BootError('bootloader', 'boot_settings_invalid', 'infrastructure', `${what} holds ${bad}: not typed at U-Boot`);
  return command;
}

function firstUntypable(text: string): string | undefined {
  const index = text.search(/[^\x20-\x7e]/);
  return index < 0 ? undefined : `byte 0x${text.charCodeAt(index).toString(16).padStart(2, '0')} at offset ${index}`;
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// The x86 test images, built from Debian packages by images/recipes/build-test-images.sh into its
// cache (scripts/setup.sh builds them; here it is a stamp check of a second or two).
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestImages {
  /** Boot bundle: kernel + initramfs holding the whole system. */
  initramfs: string;
  /** Boot bundle: kernel + loader initrd + rootfs.qcow2. */
  disk: string;
  /** The bare qcow2 disk of the disk image (no bootloader). */
  qcow2: string;
  /** Boot bundle for arm64 boards: gzipped Image + initramfs, key from the kernel command line. */
  arm64: string;
  /** Boot bundle for armv7 boards: zImage (bootz) + initramfs, key from the kernel command line. */
  armv7: string;
  /** Boot bundle for arm64 boards with no Paddock hook (dropbear -R, no authorized_keys): access overlay. */
  arm64Plain: string;
  /** A stock Debian cloud image (qcow2, cloud-init, nothing of Paddock); built only as root. */
  cloud?: string;
}

let built: Promise<TestImages> | undefined;

export function testImages(): Promise<TestImages> {
  built ??= (async () => {
    const script = path.resolve(import.meta.dirname, '../../images/recipes/build-test-images.sh');
    const { stdout } = await run('bash', [script], { maxBuffer: 1024 * 1024 });
    const dirs = Object.fromEntries(
      stdout
        .trim()
        .split('\n')
        .map((line) => line.split(' ') as [string, string]),
    );
    return {
      initramfs: path.join(dirs['x86-initramfs'], 'bundle.tar'),
      disk: path.join(dirs['x86-disk'], 'bundle.tar'),
      qcow2: path.join(dirs['x86-disk'], 'disk.qcow2'),
      arm64: path.join(dirs['arm64-initramfs'], 'bundle.tar'),
      armv7: path.join(dirs['armv7-initramfs'], 'bundle.tar'),
      arm64Plain: path.join(dirs['arm64-plain-initramfs'], 'bundle.tar'),
      ...(dirs['debian-cloud'] ? { cloud: path.join(dirs['debian-cloud'], 'disk.qcow2') } : {}),
    };
  })();
  return built;
}

// A board: the record of one physical board on a lab host, as its config entry gives it. Its power
// is a PDU port (power/, chosen by `driver:`), its console a serial device or a TCP port (console/,
// chosen by `device:` or `tcp:`), and it boots with U-Boot (boot/uboot.ts) from files staged under a
// TFTP root. Plain data, validated when the config loads (unknown keys are rejected); the drivers
// that act on a board are made from it by the board provisioner. Nothing here loads a driver.
import { z } from 'zod';
import { hostPortSchema } from './console/tcp.js';
import { consoleSettingsSchema } from './console/transport.js';
import { powerSettingsSchema } from './power/index.js';

const ipv4 = z.string().regex(/^(\d{1,3}\.){3}\d{1,3}$/, 'an IPv4 address');
const seconds = z.number().positive().max(3600);

const bootSettingsSchema = z.strictObject({
  method: z.literal('uboot').default('uboot'),
  /** What U-Boot prints as its prompt. */
  prompt: z.string().min(1).default('=> '),
  /** booti for arm64 Image, bootz for armv7 zImage, bootm for uImage. */
  command: z.enum(['booti', 'bootz', 'bootm']).default('booti'),
  /** The address the board fetches TFTP files from (this lab host as the board sees it). */
  serverIp: ipv4,
  /** The board's address during boot; without it U-Boot uses DHCP. */
  ip: ipv4.optional(),
  netmask: ipv4.default('255.255.255.0'),
  gatewayIp: ipv4.optional(),
  /** Where staged files go; default DATA/tftp, in the data directory of the lab host's agent. */
  tftpRoot: z.string().min(1).optional(),
  /**
   * Where the lab host's TFTP server for the root listens (host:port), which Paddock starts unless
   * `external`; default serverIp:69, the lab host's address on the boards' network.
   */
  tftpServer: z.union([z.literal('external'), hostPortSchema]).optional(),
  /**
   * The board's storage, for images of format raw: U-Boot writes the image to it and boots
   * from it (flash mode). Bundles always boot from RAM over TFTP.
   */
  storage: z.strictObject({ interface: z.enum(['virtio', 'mmc', 'scsi', 'usb']), device: z.number().int().min(0).default(0) }).optional(),
  /** kernel_comp_addr_r for gzip-compressed arm64 kernels. */
  decompressAddress: z
    .string()
    .regex(/^0x[0-9a-fA-F]+$/)
    .default('0x48000000'),
});

export type BootSettings = z.output<typeof bootSettingsSchema>;

/** Where the TFTP server the board fetches from listens: the setting, or the board's server address, port 69. */
export function tftpServerAddress(boot: Pick<BootSettings, 'serverIp' | 'tftpServer'>): string {
  return boot.tftpServer ?? `${boot.serverIp}:69`;
}
/** A board's storage, where flash mode writes a raw image. */
export type BoardStorage = NonNullable<BootSettings['storage']>;

export const boardSettingsSchema = z.strictObject({
  power: powerSettingsSchema,
  console: consoleSettingsSchema,
  boot: bootSettingsSchema,
  /** How the owner reaches the booted image over SSH; absent for console-only boards. */
  ssh: z.strictObject({ host: z.string().min(1), port: z.number().int().min(1).max(65535).default(22), user: z.string().min(1).default('root') }).optional(),
  /** Where the console relay for the owner listens (telnet). */
  relay: z.strictObject({ host: z.string().min(1).default('127.0.0.1') }).default({ host: '127.0.0.1' }),
  /** Seconds the board stays off before it is switched on again. */
  minOffTime: z.number().min(0).max(600).default(5),
  timeouts: z
    .strictObject({
      power: seconds.default(30),
      bootloader: seconds.default(30),
      tftp: seconds.default(120),
      kernel: seconds.default(60),
      login: seconds.default(120),
    })
    .default({ power: 30, bootloader: 30, tftp: 120, kernel: 60, login: 120 }),
});

export type BoardSettings = z.output<typeof boardSettingsSchema>;

// The `qemu` kind's settings: schema, types and what reads them; light, so the API loads it.
import { z } from 'zod';

export const qemuSettingsSchema = z.strictObject({
  /** The QEMU system emulator for the slot's architecture. */
  binary: z.string().min(1).default('qemu-system-x86_64'),
  /** qemu-img, to make each reservation's copy-on-write overlay. */
  qemuImg: z.string().min(1).default('qemu-img'),
  machine: z
    .string()
    .regex(/^[a-z0-9_.,=-]+$/i, 'a QEMU machine type such as q35')
    .default('q35'),
  /** tcg (emulation) or kvm. */
  accel: z.enum(['tcg', 'kvm']).default('tcg'),
  cpu: z
    .string()
    .regex(/^[a-z0-9_.,=+-]+$/i, 'a QEMU CPU model such as max')
    .default('max'),
  /** The guest's network card, on QEMU user networking with the SSH port forwarded to loopback. */
  nic: z
    .string()
    .regex(/^[a-z0-9_-]+$/i, 'a QEMU NIC model such as virtio-net-pci')
    .default('virtio-net-pci'),
  /** The guest user the reservation's key logs in as. */
  user: z
    .string()
    .regex(/^[a-z_][a-z0-9_.-]*\$?$/i, 'not a user name')
    .default('root'),
  /** The guest's SSH port. */
  guestPort: z.number().int().min(1).max(65535).default(22),
  /** Seconds from QEMU's start until the SSH handshake must have worked. */
  bootTimeout: z.number().positive().max(3600).default(180),
  /** Appended to QEMU's command line as they are. */
  extraArgs: z.array(z.string()).default([]),
});

export type QemuSettings = z.output<typeof qemuSettingsSchema>;

/** A slot's size when its config does not give one. */
export const qemuDefaults = {
  labels: { arch: 'x86_64' },
  capacities: { cpus: 1, ram: 256 * 1024 ** 2 },
};

/** What parses a machine's settings: the kind's name and schema (the descriptor and the provisioner share it). */
export const qemuSettings = { kind: 'qemu', settingsSchema: qemuSettingsSchema };

// The sim kind's settings: a board's boot time, failure rate and power, and the time scale every
// simulated time is multiplied by. Validated when the config loads, unknown keys refused.
import { z } from 'zod';

export const simSettingsSchema = z.strictObject({
  /** Median seconds from power-on to a login prompt on SSH (bootloader, kernel, userland). */
  bootSeconds: z.number().positive().max(3600).default(20),
  /**
   * The spread of boot times: the standard deviation of their logarithm (a log-normal). With 0.5,
   * nine boots in ten take from 0.44 to 2.3 times the median: 9 s to 45 s around 20 s.
   */
  bootSpread: z.number().min(0).max(3).default(0.5),
  /** The share of boots that never come up: the agent reports them as the infrastructure's failures (boot_timeout). */
  failureRate: z.number().min(0).max(1).default(0.02),
  /** Seconds the PDU takes to switch the board on or off. */
  powerSeconds: z.number().min(0).max(60).default(1),
  /** Every simulated time is multiplied by this, so a benchmark ends in minutes (0.01: a 20 s boot takes 0.2 s). */
  timeScale: z.number().positive().max(100).default(1),
});

export type SimSettings = z.infer<typeof simSettingsSchema>;

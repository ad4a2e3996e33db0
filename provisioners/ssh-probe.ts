// The readiness prober every provisioner kind shares: "SSH handshake done, host key captured".
import { sshHandshake, type SshConnectOptions } from '../protocol/ssh.js';

/**
 * SSH logins tried while a machine boots, beside whatever watches its console. Before the guest's
 * network is up, a forwarded port (QEMU user networking) accepts the connection and then hangs, so
 * an attempt may last its whole timeout: attempts run in the background, one at a time unless the
 * console announces SSH (then a fresh one starts at once), and the caller polls `hostKey`.
 */
export class SshProber {
  private running = 0;
  private next: number;
  /** Why the last attempt failed. */
  last = 'no attempt yet';
  /** The host key of the first login that worked. */
  hostKey?: string;

  constructor(
    private readonly options: Omit<SshConnectOptions, 'timeoutMs' | 'expectedHostKey'>,
    firstAttemptAfterMs = 1000,
  ) {
    this.next = Date.now() + firstAttemptAfterMs;
  }

  /** Starts an attempt if the console just announced SSH, or if none runs and the retry time has come. */
  poke(announced: boolean, expectedHostKey?: string): void {
    if (this.hostKey !== undefined || (!announced && (this.running > 0 || Date.now() < this.next))) return;
    this.running += 1;
    sshHandshake({ ...this.options, ...(expectedHostKey ? { expectedHostKey } : {}), timeoutMs: 10_000 })
      .then(
        (hostKey) => {
          this.hostKey ??= hostKey;
        },
        (error: unknown) => {
          this.last = (error as Error).message;
          this.next = Date.now() + 500;
        },
      )
      .finally(() => (this.running -= 1));
  }
}

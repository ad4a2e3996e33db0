// A VM's serial console for its owner to type at, as at a board's: the board console relay
// (boards/console/relay.ts: the reservation's console secret first, one writer at a time, an
// explicit takeover) in front of the agent's connection to QEMU's console socket. The relay stays
// with the VM's run directory across the connections of a lease (a power cycle makes a new one) and
// keeps its port when it is opened again, so the address the owner was given holds.
import { ConsoleRelay } from '../../boards/console/relay.js';

type Listener = (chunk: Buffer) => void;

export class VmConsoleRelays {
  /** Who listens to each run directory's console (its relay). */
  private readonly listeners = new Map<string, Set<Listener>>();
  /** The relay of each allocation, and the port it had (to listen on again). */
  private readonly relays = new Map<string, { relay: ConsoleRelay; runDir: string; port: number }>();

  /** `writer(runDir)`: how to type on that VM's console now (the agent's current connection to it). */
  constructor(private readonly writer: (runDir: string) => ((bytes: Buffer) => void) | undefined) {}

  /** What the console of `runDir` printed: for the relay's sessions. */
  feed(runDir: string, chunk: Buffer): void {
    for (const listener of this.listeners.get(runDir) ?? []) listener(chunk);
  }

  /** Opens the allocation's relay on loopback (again on `port` when given and free); its address. */
  async open(allocationId: string, runDir: string, secret: string, port?: number): Promise<{ host: string; port: number }> {
    await this.close(allocationId);
    const line = {
      tap: (listener: Listener) => {
        const set = this.listeners.get(runDir) ?? new Set<Listener>();
        this.listeners.set(runDir, set.add(listener));
        return () => set.delete(listener);
      },
      send: async (text: string | Buffer) => this.writer(runDir)?.(Buffer.from(text)),
    };
    const relay = new ConsoleRelay(line, secret);
    const address = await relay.listen('127.0.0.1', port);
    this.relays.set(allocationId, { relay, runDir, port: address.port });
    return address;
  }

  /** The port the allocation's relay had, to open it again there. */
  port(allocationId: string): number | undefined {
    return this.relays.get(allocationId)?.port;
  }

  async close(allocationId: string): Promise<void> {
    const open = this.relays.get(allocationId);
    if (!open) return;
    this.relays.delete(allocationId);
    await open.relay.close();
    if (this.listeners.get(open.runDir)?.size === 0) this.listeners.delete(open.runDir);
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.relays.keys()].map((allocationId) => this.close(allocationId)));
  }
}

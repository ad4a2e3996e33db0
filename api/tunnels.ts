// Tunnels: an owner's stream to a port of a machine that only its lab host can reach. The API
// never connects to a lab host; it queues a TunnelTask for the machine's agent, which long-polls
// for them (POST /v1/agent/tunnels/claim), connects to the port on its own network and then opens
// a WebSocket to the API (/v1/agent/tunnels/ID) that is bridged to the owner's end. A tunnel the
// agent does not open in time, or reports it cannot (POST /v1/agent/tunnels/ID/fail), is refused.
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { TunnelTask } from '../protocol/agent.js';
import { ApiError } from './errors.js';

interface Pending {
  task: TunnelTask;
  agent: string;
  resolve(stream: Duplex): void;
  reject(error: ApiError): void;
}

/** The most tunnels queued or opening per lab host: a user cannot flood an agent with them. */
const maxPendingPerAgent = 64;

export class TunnelBroker {
  /** Tasks not yet claimed, by agent. */
  private readonly queued = new Map<string, TunnelTask[]>();
  /** Tunnels waiting for their agent's WebSocket, by id. */
  private readonly pending = new Map<string, Pending>();
  private readonly waiters = new Map<string, Set<() => void>>();

  constructor(private readonly openTimeoutMs = 20_000) {}

  /**
   * Asks `agent` for a tunnel; resolves with the agent's end once it connected. Rejects with
   * tunnel_failed (the agent could not reach the port) or tunnel_timeout, or when `abort` fires
   * (the owner hung up).
   */
  open(agent: string, target: Omit<TunnelTask, 'id'>, abort?: AbortSignal): Promise<Duplex> {
    const opening = [...this.pending.values()].filter((entry) => entry.agent === agent).length;
    if (opening >= maxPendingPerAgent) {
      return Promise.reject(new ApiError(429, 'too_many_requests', `lab host ${agent} has ${opening} tunnels opening; try again shortly`));
    }
    const task: TunnelTask = { id: `t-${randomBytes(16).toString('hex')}`, ...target };
    return new Promise<Duplex>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        abort?.removeEventListener('abort', onAbort);
        this.pending.delete(task.id);
        const queue = this.queued.get(agent);
        if (queue?.includes(task))
          this.queued.set(
            agent,
            queue.filter((each) => each !== task),
          );
      };
      const timer = setTimeout(() => {
        done();
        reject(new ApiError(504, 'tunnel_timeout', `lab host ${agent} did not open the tunnel to ${target.machine} in ${this.openTimeoutMs / 1000}s`));
      }, this.openTimeoutMs);
      const onAbort = () => {
        done();
        reject(new ApiError(499, 'cancelled', 'the tunnel was given up before it opened'));
      };
      abort?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(task.id, {
        task,
        agent,
        resolve: (stream) => {
          done();
          if (abort?.aborted) stream.destroy();
          else resolve(stream);
        },
        reject: (error) => {
          done();
          reject(error);
        },
      });
      this.queued.set(agent, [...(this.queued.get(agent) ?? []), task]);
      for (const wake of this.waiters.get(agent) ?? []) wake();
    });
  }

  /** The tunnels waiting for `agent`: at once if there are some, else when one comes or after `waitMs`. */
  async claim(agent: string, waitMs: number, gone: () => boolean = () => false): Promise<TunnelTask[]> {
    const deadline = Date.now() + waitMs;
    while (!this.queued.get(agent)?.length && Date.now() < deadline && !gone()) {
      await new Promise<void>((resolve) => {
        const waiters = this.waiters.get(agent) ?? new Set();
        this.waiters.set(agent, waiters);
        const wake = () => {
          clearTimeout(timer);
          waiters.delete(wake);
          resolve();
        };
        // Checked again every second, so a claim whose agent hung up ends soon.
        const timer = setTimeout(wake, Math.min(1000, Math.max(0, deadline - Date.now())));
        waiters.add(wake);
      });
    }
    if (gone()) return []; // left queued for the agent's next claim
    const tasks = this.queued.get(agent) ?? [];
    this.queued.delete(agent);
    return tasks;
  }

  /** Whether tunnel `id` waits for `agent` (undefined: an admin, any agent). */
  waitsFor(id: string, agent: string | undefined): boolean {
    const entry = this.pending.get(id);
    return entry !== undefined && (agent === undefined || entry.agent === agent);
  }

  /** The agent's end arrived. */
  connected(id: string, stream: Duplex): void {
    const entry = this.pending.get(id);
    if (!entry) return void stream.destroy();
    entry.resolve(stream);
  }

  /** The agent could not reach the port (its reason is about its own machine, shown to the owner). */
  failed(id: string, agent: string | undefined, reason: string): boolean {
    const entry = this.pending.get(id);
    if (!entry || (agent !== undefined && entry.agent !== agent)) return false;
    entry.reject(new ApiError(502, 'tunnel_failed', `lab host ${entry.agent} cannot reach ${entry.task.machine}'s ${entry.task.service} port: ${reason}`));
    return true;
  }

  close(): void {
    for (const entry of this.pending.values()) entry.reject(new ApiError(503, 'shutting_down', 'the API is stopping'));
  }
}

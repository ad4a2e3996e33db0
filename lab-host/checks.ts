// The agent's checks of its machines: every interval, each machine of its lab host (as the API lists
// them) is checked by its kind (Provisioner.check: the serial device is there, the PDU answers, the
// SSH port accepts), a few at a time and each within a time limit. What the last round found goes
// in every heartbeat as the whole list, so the API marks those machines unreachable and lifts the
// mark of a machine once it is no longer named. Checks never power or change anything.
import { setTimeout as sleep } from 'node:timers/promises';
import { machineProblemLimits, type AgentMachine, type MachineProblem } from '../protocol/agent.js';
import type { Provisioner } from '../provisioners/types.js';
import type { Log } from '../protocol/log.js';

export interface MachineChecksOptions {
  /** The machines of this agent's lab host and kinds, from the API. */
  machines(): Promise<AgentMachine[]>;
  provisioner(kind: string): Pick<Provisioner, 'check'>;
  /** Between the end of one round and the start of the next. */
  intervalMs: number;
  /** One machine's check gives up after this long (default 5 s): that is a problem too. */
  timeoutMs?: number;
  /** Machines checked at once (default 8). */
  concurrency?: number;
  /** After a round that found other problems than the one before. */
  changed(): void;
  log: Log;
}

// eslint-disable-next-line no-control-regex -- replacing them is the point
const controls = /[\u0000-\u001f\u007f-\u009f]+/g;

/** A reason as the API takes it: one line, no control characters, bounded. */
export function problemText(reasons: string[]): string {
  const text = reasons.join('; ').replace(controls, ' ').replace(/ {2,}/g, ' ').trim() || 'unreachable';
  const max = machineProblemLimits.reason;
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export class MachineChecks {
  private found?: MachineProblem[];
  private timer?: NodeJS.Timeout;
  private running = false;
  private stopped = false;

  constructor(private readonly options: MachineChecksOptions) {}

  /** What the last round found, for the heartbeat; undefined until a round has run. */
  get problems(): MachineProblem[] | undefined {
    return this.found;
  }

  start(): void {
    this.stopped = false;
    this.next(0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private next(delayMs: number): void {
    this.timer = setTimeout(() => {
      void this.round()
        .catch((error: unknown) => this.options.log.error({ error: (error as Error).message }, 'machine checks failed'))
        .finally(() => {
          if (!this.stopped) this.next(this.options.intervalMs);
        });
    }, delayMs);
    this.timer.unref();
  }

  /** Checks every machine once; tells `changed` when the problems differ from the last round's. */
  async round(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const machines = await this.options.machines();
      const problems: MachineProblem[] = [];
      const queue = [...machines];
      const worker = async () => {
        for (let machine = queue.shift(); machine; machine = queue.shift()) {
          const reasons = await this.check(machine);
          if (reasons.length > 0) problems.push({ machine: machine.name, reason: problemText(reasons) });
        }
      };
      await Promise.all(Array.from({ length: this.options.concurrency ?? 8 }, worker));
      problems.sort((a, b) => (a.machine < b.machine ? -1 : a.machine > b.machine ? 1 : 0));
      if (problems.length > machineProblemLimits.count) {
        this.options.log.warn({ problems: problems.length, reported: machineProblemLimits.count }, 'too many machines have problems; the first are reported');
        problems.length = machineProblemLimits.count;
      }
      if (this.stopped) return;
      const before = new Map((this.found ?? []).map((problem) => [problem.machine, problem.reason]));
      for (const problem of problems) {
        if (before.get(problem.machine) !== problem.reason) this.options.log.warn({ machine: problem.machine, reason: problem.reason }, 'cannot be reached');
        before.delete(problem.machine);
      }
      for (const machine of before.keys()) this.options.log.info({ machine }, 'can be reached again');
      const changed = this.found === undefined || JSON.stringify(problems) !== JSON.stringify(this.found);
      this.found = problems;
      if (changed) this.options.changed();
    } finally {
      this.running = false;
    }
  }

  /**
   * One machine's problems. Its check gets a signal that fires at the time limit (and says what did
   * not answer); one that throws is a problem, and one that has not ended a second after is too.
   */
  private async check(machine: AgentMachine): Promise<string[]> {
    const timeoutMs = this.options.timeoutMs ?? 5000;
    const done = new AbortController();
    const stuck = sleep(timeoutMs + 1000, undefined, { ref: false, signal: done.signal }).then(
      () => [`its check did not end within ${timeoutMs / 1000}s`],
      () => [],
    );
    try {
      const check = this.options.provisioner(machine.kind).check?.(machine, AbortSignal.timeout(timeoutMs)) ?? Promise.resolve([]);
      return await Promise.race([check.catch((error: unknown) => [`its check failed: ${(error as Error).message}`]), stuck]);
    } finally {
      done.abort();
    }
  }
}

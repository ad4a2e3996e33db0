// A runner host's Prometheus metrics (`paddock runner --metrics-listen`, protocol/metrics.ts): the
// runs it ran, by outcome and fault, how long they took, and its slots in use. A registry of its own
// per runner host, with the process's metrics. Labels are bounded: outcomes and faults come from the code.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { RunFinish } from '../protocol/runner.js';

export class RunnerMetrics {
  readonly registry = new Registry();
  private readonly runs: Counter<'outcome' | 'fault'>;
  private readonly seconds: Histogram<'outcome'>;

  /** `busy` tells how many runs are under way now, read at scrape time. */
  constructor(slots: number, busy: () => number) {
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.runs = new Counter({
      name: 'paddock_runner_runs_total',
      help: 'Runs this runner host ran to their end, by outcome (passed, failed, timed_out, cancelled) and fault (infrastructure, request or none)',
      labelNames: ['outcome', 'fault'],
      registers,
    });
    this.seconds = new Histogram({
      name: 'paddock_runner_run_duration_seconds',
      help: 'Time from taking a run to reporting its end',
      labelNames: ['outcome'],
      buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400],
      registers,
    });
    new Gauge({ name: 'paddock_runner_slots', help: 'Runs this runner host takes at once', registers }).set(slots);
    new Gauge({
      name: 'paddock_runner_slots_busy',
      help: 'Runs under way on this runner host',
      registers,
      collect() {
        this.set(busy());
      },
    });
  }

  ran(outcome: Omit<RunFinish, 'runner'>, seconds: number): void {
    this.runs.inc({ outcome: outcome.outcome, fault: outcome.fault ?? 'none' });
    this.seconds.observe({ outcome: outcome.outcome }, seconds);
  }
}

// A lab-host agent's Prometheus metrics: PDU commands (by driver model, on or off, and outcome, with
// their durations) and the reports it sent the API about its tasks. In `paddock serve` the embedded
// agent adds them to the API's registry (one /metrics for the process); `paddock agent
// --metrics-listen` serves a registry of its own (protocol/metrics.ts), with the process's metrics.
// Labels are bounded: drivers, operations, report kinds and failure codes come from the code.
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import type { PowerObserver } from '../boards/power/types.js';
import type { AgentReport } from '../protocol/agent.js';

export class AgentMetrics {
  readonly registry: Registry;
  private readonly powerCommands: Counter<'driver' | 'operation' | 'outcome'>;
  private readonly powerSeconds: Histogram<'driver' | 'operation'>;
  private readonly reports: Counter<'report' | 'code'>;

  /** With a registry: its metrics go there (the API's, in `paddock serve`); without: a registry of its own. */
  constructor(registry?: Registry) {
    this.registry = registry ?? new Registry();
    const registers = [this.registry];
    this.powerCommands = new Counter({
      name: 'paddock_pdu_operations_total',
      help: 'Commands sent to PDUs, by driver model, operation (on, off) and outcome (ok, or failed: an error or a state read back that differs)',
      labelNames: ['driver', 'operation', 'outcome'],
      registers,
    });
    this.powerSeconds = new Histogram({
      name: 'paddock_pdu_operation_duration_seconds',
      help: 'Time a PDU command took, its read-back included',
      labelNames: ['driver', 'operation'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers,
    });
    this.reports = new Counter({
      name: 'paddock_agent_reports_total',
      help: 'Reports the agent sent about its tasks (stage, ready, failed, released, off), failures by code',
      labelNames: ['report', 'code'],
      registers,
    });
  }

  /** Adds the process's own metrics (CPU, memory, event loop), for an agent that serves its registry itself. */
  withProcessMetrics(): Registry {
    collectDefaultMetrics({ register: this.registry });
    return this.registry;
  }

  readonly power: PowerObserver = ({ driver, operation, seconds, failed }) => {
    this.powerCommands.inc({ driver, operation, outcome: failed ? 'failed' : 'ok' });
    this.powerSeconds.observe({ driver, operation }, seconds);
  };

  reported(report: AgentReport): void {
    this.reports.inc({ report: report.kind, code: report.kind === 'failed' ? (report.code ?? 'none') : 'none' });
  }
}

// What a failure an agent reports means, as a pure function of the allocation's state and the
// report: requeue the request (the cloud was full), move the member to another machine (an
// infrastructure failure while provisioning, with retries left: retries.ts carries it out), fail
// the reservation (counting the failure
// against the machine's health and blaming the image where the code says so), fail one member
// (its power action or re-deploy during the lease failed), quarantine the
// machine (its teardown failed), or nothing (the report is about work already finished).
// agents.ts carries the verdict out; the table tests are in test/api/scheduler/failure.test.ts.
import type { AllocationState } from '../../protocol/api.js';

/** Failure codes that say the image did not boot: they count against the image. */
const imageFaults = new Set(['image_corrupt', 'image_unbootable', 'kernel_timeout', 'boot_timeout']);
/** Infrastructure failures that are not the machine's: they do not count toward its quarantine. */
const notTheMachine = new Set(['no_capacity', 'cloud_unreachable', 'lab_host_offline']);

export interface FailureReport {
  fault: 'infrastructure' | 'request';
  code?: string;
}

export type FailureVerdict =
  /** The cloud is full (quota, no valid host): not the request's fault nor the machine's; it waits in the queue again. */
  | { action: 'requeue'; code: string }
  /**
   * The machine failed while being provisioned and the member has retries left: it moves to another
   * matching machine (or waits for one) while the failed one is torn down; the gang's other members
   * keep theirs. Request failures (a bad image) are never retried: another machine would fail the same.
   */
  | { action: 'retry'; code: string; countAgainstMachine: boolean }
  /** The reservation fails with `code`; a ready machine can be lost too (its VM died). */
  | { action: 'fail'; code: string; countAgainstMachine: boolean; blameImage: boolean }
  /**
   * Teardown failed for good: the machine leaves the pool until an admin looks at it. Not counted
   * again: a failed provisioning whose cleanup fails too is one fault of the machine, not two.
   */
  | { action: 'quarantine' }
  /**
   * A power action or re-deploy during the lease failed: that member fails alone (the reservation and
   * its other members live on), counting against the machine or blaming the image as a provisioning would.
   */
  | { action: 'failMember'; code: string; countAgainstMachine: boolean; blameImage: boolean }
  /** A report about work already finished (or a lost machine that is being released anyway). */
  | { action: 'ignore' };

export function failureVerdict(allocation: AllocationState, report: FailureReport, leaseAction = false, retriesLeft = 0): FailureVerdict {
  const provisioning = allocation === 'provisioning';
  if (provisioning && leaseAction) {
    const code = report.code ?? `${report.fault === 'request' ? 'request' : 'infrastructure'}_failed`;
    return {
      action: 'failMember',
      code,
      countAgainstMachine: report.fault === 'infrastructure' && !notTheMachine.has(code),
      blameImage: report.fault === 'request' && imageFaults.has(code),
    };
  }
  if (provisioning && report.code === 'no_capacity') return { action: 'requeue', code: report.code };
  if (provisioning && report.fault === 'infrastructure' && retriesLeft > 0) {
    const code = report.code ?? 'infrastructure_failed';
    return { action: 'retry', code, countAgainstMachine: !notTheMachine.has(code) };
  }
  if (provisioning || allocation === 'ready') {
    const code = report.code ?? (provisioning ? `${report.fault === 'request' ? 'request' : 'infrastructure'}_failed` : 'machine_lost');
    return {
      action: 'fail',
      code,
      countAgainstMachine: report.fault === 'infrastructure' && !notTheMachine.has(code),
      blameImage: report.fault === 'request' && imageFaults.has(code),
    };
  }
  if (allocation === 'releasing' && report.code !== 'machine_lost') return { action: 'quarantine' };
  return { action: 'ignore' };
}

/** Whether a machine with this many infrastructure failures in a row is quarantined. */
/** Whether a failure that is not a provisioning's (a warm boot's) counts against its machine, as failureVerdict would count it. */
export const countsAgainstMachine = (report: Required<FailureReport>) => report.fault === 'infrastructure' && !notTheMachine.has(report.code);

export function quarantines(failures: number, health: { quarantineAfter: number }): boolean {
  return failures >= health.quarantineAfter;
}

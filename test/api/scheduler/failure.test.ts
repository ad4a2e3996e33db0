// The failure policy of an agent's report: requeue (the cloud was full), fail the reservation
// (counting toward the machine's quarantine, blaming the image), quarantine after a failed
// teardown, or ignore a report about finished work. Plain data in, a verdict out.
import test from 'ava';
import type { AllocationState } from '../../../protocol/api.js';
import { failureVerdict, quarantines, type FailureReport, type FailureVerdict } from '../../../api/scheduler/failure.js';

const fail = (code: string, countAgainstMachine: boolean, blameImage: boolean): FailureVerdict => ({ action: 'fail', code, countAgainstMachine, blameImage });
const infrastructure = (code?: string): FailureReport => ({ fault: 'infrastructure', ...(code === undefined ? {} : { code }) });
const request = (code?: string): FailureReport => ({ fault: 'request', ...(code === undefined ? {} : { code }) });

const table: [AllocationState, FailureReport, FailureVerdict][] = [
  // [the allocation's state, the report, the verdict]
  // A full cloud sends the request back to the queue, whoever the report blames.
  ['provisioning', infrastructure('no_capacity'), { action: 'requeue', code: 'no_capacity' }],
  ['provisioning', request('no_capacity'), { action: 'requeue', code: 'no_capacity' }],
  // Provisioning failures: the code defaults by fault; the machine pays for its own failures only.
  ['provisioning', infrastructure(), fail('infrastructure_failed', true, false)],
  ['provisioning', request(), fail('request_failed', false, false)],
  ['provisioning', infrastructure('ssh_timeout'), fail('ssh_timeout', true, false)],
  ['provisioning', infrastructure('cloud_unreachable'), fail('cloud_unreachable', false, false)],
  // The lab host went silent: not the machine's fault.
  ['provisioning', infrastructure('lab_host_offline'), fail('lab_host_offline', false, false)],
  // The image is blamed for the codes that say it did not boot, when the request is at fault.
  ['provisioning', request('image_corrupt'), fail('image_corrupt', false, true)],
  ['provisioning', request('image_unbootable'), fail('image_unbootable', false, true)],
  ['provisioning', request('kernel_timeout'), fail('kernel_timeout', false, true)],
  ['provisioning', request('boot_timeout'), fail('boot_timeout', false, true)],
  ['provisioning', infrastructure('boot_timeout'), fail('boot_timeout', true, false)],
  ['provisioning', request('bad_script'), fail('bad_script', false, false)],
  // A ready machine can be lost (its VM died): the reservation fails the same way.
  ['ready', infrastructure(), fail('machine_lost', true, false)],
  ['ready', request(), fail('machine_lost', false, false)],
  ['ready', infrastructure('machine_lost'), fail('machine_lost', true, false)],
  ['ready', infrastructure('no_capacity'), fail('no_capacity', false, false)],
  // A failed teardown quarantines the machine, unless the machine is simply gone.
  ['releasing', infrastructure(), { action: 'quarantine' }],
  ['releasing', request('release_failed'), { action: 'quarantine' }],
  ['releasing', infrastructure('no_capacity'), { action: 'quarantine' }],
  ['releasing', infrastructure('machine_lost'), { action: 'ignore' }],
  // Reports about work not in progress change nothing.
  ['pending', infrastructure(), { action: 'ignore' }],
  ['pending', infrastructure('no_capacity'), { action: 'ignore' }],
  ['released', infrastructure(), { action: 'ignore' }],
  ['failed', request('image_corrupt'), { action: 'ignore' }],
];

for (const [state, report, verdict] of table) {
  test(`${state}, ${report.fault} fault${report.code ? ` ${report.code}` : ''} → ${verdict.action}${verdict.action === 'fail' ? ` ${verdict.code}` : ''}`, (t) => {
    t.deepEqual(failureVerdict(state, report), verdict);
  });
}

const failMember = (code: string, countAgainstMachine: boolean, blameImage: boolean): FailureVerdict => ({
  action: 'failMember',
  code,
  countAgainstMachine,
  blameImage,
});

// A power action or re-deploy during the lease: the member fails alone; a full cloud does not send
// a granted reservation back to the queue; the image and the machine are judged as in provisioning.
const duringLease: [AllocationState, FailureReport, FailureVerdict][] = [
  ['provisioning', request('image_corrupt'), failMember('image_corrupt', false, true)],
  ['provisioning', request('image_not_found'), failMember('image_not_found', false, false)],
  ['provisioning', request(), failMember('request_failed', false, false)],
  ['provisioning', infrastructure('power_failed'), failMember('power_failed', true, false)],
  ['provisioning', infrastructure('no_capacity'), failMember('no_capacity', false, false)],
  ['provisioning', infrastructure('lab_host_offline'), failMember('lab_host_offline', false, false)],
  // A member switched off, or failed already, is not lost again.
  ['off', infrastructure('machine_lost'), { action: 'ignore' }],
  ['failed', infrastructure(), { action: 'ignore' }],
  ['releasing', infrastructure(), { action: 'quarantine' }],
];

for (const [state, report, verdict] of duringLease) {
  test(`during a lease action: ${state}, ${report.fault} fault${report.code ? ` ${report.code}` : ''} → ${verdict.action}`, (t) => {
    t.deepEqual(failureVerdict(state, report, true), verdict);
  });
}

// Retry on another machine: an infrastructure failure while provisioning, with retries left, moves
// the member; the machine still pays for its own failures. A full cloud requeues, a request fault
// (a bad image) fails, a lease action fails its member alone, and no retries left fails as before.
const retry = (code: string, countAgainstMachine: boolean): FailureVerdict => ({ action: 'retry', code, countAgainstMachine });
const withRetries: [AllocationState, FailureReport, boolean, number, FailureVerdict][] = [
  // [the allocation's state, the report, during a lease action, retries left, the verdict]
  ['provisioning', infrastructure(), false, 1, retry('infrastructure_failed', true)],
  ['provisioning', infrastructure('power_failed'), false, 2, retry('power_failed', true)],
  ['provisioning', infrastructure('boot_timeout'), false, 1, retry('boot_timeout', true)],
  ['provisioning', infrastructure('lab_host_offline'), false, 1, retry('lab_host_offline', false)],
  ['provisioning', infrastructure('cloud_unreachable'), false, 1, retry('cloud_unreachable', false)],
  ['provisioning', infrastructure('power_failed'), false, 0, fail('power_failed', true, false)],
  ['provisioning', infrastructure('no_capacity'), false, 2, { action: 'requeue', code: 'no_capacity' }],
  ['provisioning', request('image_not_found'), false, 2, fail('image_not_found', false, false)],
  ['provisioning', request('image_corrupt'), false, 2, fail('image_corrupt', false, true)],
  ['provisioning', infrastructure('power_failed'), true, 2, failMember('power_failed', true, false)],
  ['ready', infrastructure('machine_lost'), false, 2, fail('machine_lost', true, false)],
  ['releasing', infrastructure(), false, 2, { action: 'quarantine' }],
  ['pending', infrastructure(), false, 2, { action: 'ignore' }],
];

for (const [state, report, leaseAction, retriesLeft, verdict] of withRetries) {
  const during = leaseAction ? ' during a lease action' : '';
  test(`${retriesLeft} retries left${during}: ${state}, ${report.fault} fault${report.code ? ` ${report.code}` : ''} → ${verdict.action}`, (t) => {
    t.deepEqual(failureVerdict(state, report, leaseAction, retriesLeft), verdict);
  });
}

test('a machine is quarantined at the health limit of failures in a row, not before', (t) => {
  const cases: [number, number, boolean][] = [
    // [failures in a row, quarantineAfter, quarantined]
    [0, 3, false],
    [2, 3, false],
    [3, 3, true],
    [4, 3, true],
    [1, 1, true],
  ];
  for (const [failures, quarantineAfter, expected] of cases) t.is(quarantines(failures, { quarantineAfter }), expected, `${failures} of ${quarantineAfter}`);
});

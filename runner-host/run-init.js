// The first process of an isolated run's PID namespace (its "init"), already running as the run's
// own user: it starts the job script, and once the script has ended, writes how on fd 3 as one JSON
// line ({ exitCode, signal } or { spawnError }) and then waits until the runner host closes its
// stdin. While it lives the namespace lives, so the runner host can still stop what the script
// left running with SIGTERM and a grace period; when it exits the kernel kills whatever is left in
// the namespace, setsid or not. It is a process of its own rather than the script itself because a
// namespace's first process ignores every signal it has no handler for (a plain shell script would
// shrug off SIGTERM), and the script must not learn fd 3.
//
// Plain JavaScript, so Node runs it without tsx: tsx's esbuild helper would be one more process
// in the namespace, taken for something the script left running.
// Started by launch.ts as: node run-init.js COMMAND [ARGS…]
import { spawn } from 'node:child_process';
import { openSync, writeSync } from 'node:fs';

const statusFd = 3;
const [command, ...args] = process.argv.slice(2);

/** @param {{ started?: true, exitCode?: number | null, signal?: string | null, spawnError?: string }} status */
function report(status) {
  try {
    writeSync(statusFd, `${JSON.stringify(status)}\n`);
  } catch {
    // the runner host is gone; the namespace dies with it
  }
}

// First: the namespace exists and runs (the runner host looks it up only after this line).
report({ started: true });
let reported = false;
let released = false;
/** @param {Parameters<typeof report>[0]} status */
const end = (status) => {
  if (reported) return;
  reported = true;
  report(status);
  if (released) process.exit(0);
};
// fd 3 of the script is /dev/null, so the status pipe is not handed on.
const script = spawn(command, args, { stdio: ['ignore', 'inherit', 'inherit', openSync('/dev/null', 'r')] });
script.once('error', (error) => end({ spawnError: error.message }));
script.once('exit', (exitCode, signal) => end({ exitCode, signal }));
// The runner host closes stdin once it has stopped what the script left running (or stdin was
// never open): exit then, not before the script has ended.
const release = () => {
  released = true;
  if (reported) process.exit(0);
};
process.stdin.once('end', release);
process.stdin.once('close', release);
process.stdin.resume();

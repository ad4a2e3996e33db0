// A power switch driven by shell commands (a relay board's CLI, a vendor tool, a script): `on` and
// `off` run with /bin/sh -c and must exit 0; `state`, when given, prints on or off (or 1/0).
// Commands may hold credentials, so messages name which command failed, never its text.
import { spawn } from 'node:child_process';
import { z } from 'zod';
import { PowerError, type PowerDriver, type PowerState } from './types.js';

export const commandSettingsSchema = z.strictObject({
  driver: z.literal('command'),
  on: z.string().trim().min(1),
  off: z.string().trim().min(1),
  /** Prints the port's state: on/off or 1/0 (case and surrounding space do not matter). */
  state: z.string().trim().min(1).optional(),
  /** Seconds each command may take before it (and its process group) is killed. */
  timeout: z.number().positive().max(3600).default(30),
  /** Commands for the same `pdu` never run at the same time. */
  pdu: z.string().trim().min(1).default('command'),
});

export type CommandSettings = z.output<typeof commandSettingsSchema>;

const STDOUT_LIMIT = 64 * 1024;
const STDERR_TAIL = 4 * 1024;

/** The last lines of a command's stderr, short enough for a message. */
function tail(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((line) => line.trimEnd())
    .filter(Boolean);
  const text = lines.slice(-5).join(' | ');
  return text.length > 500 ? `…${text.slice(-500)}` : text;
}

export function createCommandDriver(settings: CommandSettings): PowerDriver {
  const describe = settings.pdu;

  function run(which: 'on' | 'off' | 'state', command: string, signal?: AbortSignal): Promise<string> {
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      // Own process group, so a timeout or an abort also ends what the shell started.
      const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      const killGroup = () => {
        try {
          if (child.pid) process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      };
      const timer = setTimeout(() => {
        timedOut = true;
        killGroup();
      }, settings.timeout * 1000);
      const onAbort = () => killGroup();
      signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        if (stdout.length < STDOUT_LIMIT) stdout += chunk;
      });
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        stderr = (stderr + chunk).slice(-STDERR_TAIL);
      });
      const finish = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      child.once('error', (error) => {
        finish();
        reject(new PowerError(`${describe}: the ${which} command could not be started: ${error.message}`, { cause: error }));
      });
      child.once('close', (code, killedBy) => {
        finish();
        if (signal?.aborted) return reject(signal.reason);
        if (timedOut) return reject(new PowerError(`${describe}: the ${which} command did not finish within ${settings.timeout}s and was killed`));
        if (code !== 0) {
          const status = code === null ? `was killed by ${killedBy}` : `exited with status ${code}`;
          const detail = tail(stderr);
          return reject(new PowerError(`${describe}: the ${which} command ${status}${detail ? `: ${detail}` : ' (no stderr)'}`));
        }
        resolve(stdout);
      });
    });
  }

  const driver: PowerDriver = {
    pdu: settings.pdu,
    describe,
    on: async (signal) => void (await run('on', settings.on, signal)),
    off: async (signal) => void (await run('off', settings.off, signal)),
  };
  const stateCommand = settings.state;
  if (stateCommand) {
    driver.readState = async (signal): Promise<PowerState> => {
      const printed = (await run('state', stateCommand, signal)).trim();
      const word = printed.toLowerCase();
      if (word === 'on' || word === '1') return 'on';
      if (word === 'off' || word === '0') return 'off';
      const shown = printed.length > 80 ? `${printed.slice(0, 80)}…` : printed;
      throw new PowerError(`${describe}: the state command printed ${JSON.stringify(shown)}, expected on or off (or 1/0)`);
    };
  }
  return driver;
}

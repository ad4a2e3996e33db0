// A qualification boot's check (config `qualify.check`): once the machine is up, the agent runs the
// command over SSH as the machine's login user, with the reservation's key and the host key seen at
// readiness pinned. Exit 0 passes the boot; anything else fails it as the infrastructure's fault
// (`check_failed`, stage `probed`), with the last lines the command wrote. Only a bounded tail of its
// output is kept: a broken machine may write without end.
import { ProvisionError, type Readiness } from '../provisioners/types.js';
import { scrub, sshConnect } from '../protocol/ssh.js';

/** The most bytes of the check's output kept (its tail) for the failure's reason. */
const tailBytes = 2048;
/** The longest a check may run, within what is left of the provisioning's own timeout. */
const checkTimeoutMs = 300_000;

export async function runCheck(command: string, readiness: Readiness, privateKey: string, signal: AbortSignal): Promise<void> {
  if (!('host' in readiness)) {
    throw new ProvisionError('the machine has no SSH login to run the qualification check on', 'infrastructure', 'probed', { code: 'check_failed' });
  }
  const check = AbortSignal.any([signal, AbortSignal.timeout(checkTimeoutMs)]);
  let result: { code: number | null; tail: string };
  try {
    const { client } = await sshConnect({
      host: readiness.host,
      port: readiness.port,
      user: readiness.user,
      privateKey,
      ...(readiness.hostKey ? { expectedHostKey: readiness.hostKey } : {}),
      timeoutMs: 30_000,
      signal: check,
    });
    try {
      result = await exec(client, command, check);
    } finally {
      client.end();
    }
  } catch (error) {
    if (signal.aborted) throw error;
    throw new ProvisionError(`qualification check: ${scrub((error as Error).message)}`, 'infrastructure', 'probed', { code: 'check_failed' });
  }
  if (result.code !== 0) {
    const said = result.tail.trim().split('\n').slice(-5).join(' | ');
    const status = result.code === null ? 'ended without an exit status' : `exited ${result.code}`;
    throw new ProvisionError(`qualification check ${status}${said ? `: ${said}` : ''}`, 'infrastructure', 'probed', { code: 'check_failed' });
  }
}

function exec(client: Awaited<ReturnType<typeof sshConnect>>['client'], command: string, signal: AbortSignal): Promise<{ code: number | null; tail: string }> {
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new Error(signal.reason instanceof Error ? signal.reason.message : 'the check took too long'));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    client.exec(command, (error, stream) => {
      if (error) {
        signal.removeEventListener('abort', onAbort);
        return reject(new Error(`ssh exec failed: ${error.message}`));
      }
      let tail = '';
      let code: number | null = null;
      const keep = (chunk: Buffer) => {
        tail = (tail + chunk.toString('utf8')).slice(-tailBytes);
      };
      stream.on('data', keep);
      stream.stderr.on('data', keep);
      stream.on('exit', (exitCode: number | null) => {
        if (typeof exitCode === 'number') code = exitCode;
      });
      stream.once('close', () => {
        signal.removeEventListener('abort', onAbort);
        resolve({ code, tail: tail.replace(/(?![\t\n])\p{Cc}/gu, '') });
      });
      stream.end();
    });
  });
}

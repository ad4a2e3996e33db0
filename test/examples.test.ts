// The README's first command, minus the install step: `paddock serve` on its embedded defaults
// with two real sshd hosts, and the example job script run against it, green.
import { execFile } from 'node:child_process';
import test from 'ava';

test('the example job script runs green against the embedded default', async (t) => {
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'scripts/demo.ts'], { timeout: 120_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
  t.is(code, 0, `${stdout}\n${stderr}`);
  t.regex(stdout, /build says: Linux/);
  t.regex(stdout, /test says: Linux/);
  t.regex(stdout, /copied build:\S+ to test intact/);
  t.regex(stderr, /demo: the job passed/);
  t.regex(stderr, /admin token: \S+admin-token/);
  t.notRegex(stdout + stderr, /pdk_[A-Za-z0-9_-]{20,}/, 'the admin token itself is never printed');
});

// The README's first command, minus the install step: `paddock serve` on its embedded defaults
// (a pool of two QEMU VM slots), the test image uploaded, and the example job script run against
// it on two real VMs, green.
import { execFile } from 'node:child_process';
import test from 'ava';

test('the example job script runs green against the embedded default', async (t) => {
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'scripts/demo.ts'], { timeout: 240_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
  t.is(code, 0, `${stdout}\n${stderr}`);
  t.regex(stdout, /build says: Linux/);
  t.regex(stdout, /test says: Linux/);
  t.regex(stdout, /copied build:\S+ to test intact/);
  t.regex(stdout, /build: vm-\d at root@127\.0\.0\.1:\d+/, 'the machines are the embedded QEMU slots');
  t.regex(stderr, /uploading bundle\.tar: .*100%/, 'the image upload shows progress');
  t.regex(stderr, /demo: the job passed/);
  t.regex(stderr, /admin token written.*admin-token/);
  t.notRegex(stdout + stderr, /pdk_[A-Za-z0-9_-]{20,}/, 'the admin token itself is never printed');
});

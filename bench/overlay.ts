// Benchmark (not a test): what a board reservation of an image with access `overlay` spends on its
// per-reservation initrd (host key with ssh-keygen + dropbearconvert, overlay archive with cpio +
// gzip, the base copied and the overlay appended: images/initrd-overlay.ts), against the baseline
// measured in the same run, a plain copy of the same initrd (what staging does when it cannot hard
// link). The initrd is the arm64 test image with no hook (images/recipes/arm64-plain-initramfs.sh).
//
//   npm run bench:overlay        (PADDOCK_BENCH_QUICK=1 for 5 rounds instead of 30)
import { execFileSync } from 'node:child_process';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sshServersOf, writeOverlayInitrd } from '../images/initrd-overlay.js';
import { testImages } from '../test/helpers/images.js';

const rounds = process.env.PADDOCK_BENCH_QUICK === '1' ? 5 : 30;
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const spread = (values: number[]) => `${Math.min(...values).toFixed(1)}–${Math.max(...values).toFixed(1)}`;

const scratch = await mkdtemp(path.join(os.tmpdir(), 'paddock-bench-overlay-'));
try {
  execFileSync('tar', ['-xf', (await testImages()).arm64Plain, '-C', scratch, 'initrd']);
  const base = path.join(scratch, 'initrd');
  await sshServersOf(base); // the listing is read once per bundle, not per reservation
  const copies: number[] = [];
  const totals: number[] = [];
  const keys: number[] = [];
  const archives: number[] = [];
  for (let round = 0; round < rounds; round += 1) {
    const started = performance.now();
    await copyFile(base, path.join(scratch, `copy-${round}`));
    copies.push(performance.now() - started);
    const overlay = await writeOverlayInitrd({
      base,
      target: path.join(scratch, `overlay-${round}`),
      mode: 0o644,
      authorizedKeys: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2Yk3oT7cYbN1dZ1tdQ0t5m2m3yFv8o0m4uJm0Y5pP bench',
      workDir: path.join(scratch, 'work'),
    });
    totals.push(overlay.timings.total);
    keys.push(overlay.timings.key);
    archives.push(overlay.timings.archive);
  }
  console.log(`per-reservation overlay initrd, ${rounds} rounds, load ${os.loadavg()[0].toFixed(1)}, ${os.cpus().length} cores:`);
  console.log(`  overlay initrd  median ${median(totals).toFixed(1)} ms (${spread(totals)})`);
  console.log(`    host key      median ${median(keys).toFixed(1)} ms (ssh-keygen + dropbearconvert)`);
  console.log(`    archive       median ${median(archives).toFixed(1)} ms (cpio + gzip)`);
  console.log(`  baseline copy   median ${median(copies).toFixed(1)} ms (${spread(copies)})`);
  console.log(`  ratio overlay / copy: ${(median(totals) / median(copies)).toFixed(1)}`);
} finally {
  await rm(scratch, { recursive: true, force: true });
}

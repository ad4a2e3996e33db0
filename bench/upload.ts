// Benchmark (not a test): the image upload rate through Paddock (`paddock images upload` in its own
// process, as a build runs it: the client hashes the file, streams it over HTTP, the server hashes
// it on the way into the store and checks the digest) divided by the rate of `cp` copying the same
// file on the same disk, in the same run.
// Aim: 80 % or more of cp's rate.
//
//   node --import tsx bench/upload.ts [MiB]      (default 512)
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../api/config.js';
import { serve } from '../cli/serve.js';
import { Paddock } from '../client/index.js';
import { silentLog } from '../protocol/log.js';

const run = promisify(execFile);
const mib = Number(process.argv[2] ?? 512);
const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-bench-upload-'));
const file = path.join(dir, 'image.raw');
const chunk = randomBytes(1024 * 1024);
const fd = openSync(file, 'w');
for (let index = 0; index < mib; index++) writeSync(fd, chunk);
closeSync(fd);

const config = {
  ...parseConfig(`images: { maxSize: ${mib + 1}MiB }\nagent: { enabled: false }`),
  listen: { host: '127.0.0.1', port: 0 },
  dataDir: path.join(dir, 'data'),
};
const server = await serve({ config, log: silentLog() });
try {
  const token = (await import('node:fs')).readFileSync(server.adminTokenFile, 'utf8').trim();
  const paddock = new Paddock({ url: server.url, token });
  const seconds = (work: () => unknown) => {
    const started = process.hrtime.bigint();
    work();
    return Number(process.hrtime.bigint() - started) / 1e9;
  };
  const rates: { cp: number; upload: number }[] = [];
  for (let round = 0; round < 3; round++) {
    const cpSeconds = seconds(() => execFileSync('cp', [file, path.join(dir, `copy-${round}`)]));
    rmSync(path.join(dir, `copy-${round}`));
    const started = process.hrtime.bigint();
    await run(
      process.execPath,
      [
        path.resolve(import.meta.dirname, '../bin/paddock.js'),
        'images',
        'upload',
        file,
        '--name',
        'bench',
        '--tag',
        `round-${round}`,
        '--format',
        'raw',
        '--quiet',
      ],
      {
        env: { ...process.env, PADDOCK_URL: server.url, PADDOCK_TOKEN: token },
      },
    );
    const uploadSeconds = Number(process.hrtime.bigint() - started) / 1e9;
    await paddock.images.remove(`bench:round-${round}`);
    rates.push({ cp: mib / cpSeconds, upload: mib / uploadSeconds });
    console.log(`round ${round + 1}: cp ${(mib / cpSeconds).toFixed(0)} MiB/s, upload ${(mib / uploadSeconds).toFixed(0)} MiB/s`);
  }
  const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const cp = median(rates.map((rate) => rate.cp));
  const upload = median(rates.map((rate) => rate.upload));
  console.log(`${mib} MiB: upload ${upload.toFixed(0)} MiB/s vs cp ${cp.toFixed(0)} MiB/s: ratio ${(upload / cp).toFixed(2)} (aim: at least 0.80)`);
} finally {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}

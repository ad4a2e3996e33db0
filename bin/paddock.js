#!/usr/bin/env node
// The `paddock` command. It runs the compiled code in dist/ (`npm run build`; scripts/setup.sh
// builds it), so a call starts about as fast as Node itself. PADDOCK_FROM_SOURCE=1 runs the
// TypeScript sources through tsx instead (development, without a build). The imports are relative
// to this file, so it works from any directory.
import { existsSync } from 'node:fs';
import { URL } from 'node:url';

const compiled = new URL('../dist/cli/index.js', import.meta.url);
let entry = compiled.href;
if (process.env.PADDOCK_FROM_SOURCE === '1' || !existsSync(compiled)) {
  if (process.env.PADDOCK_FROM_SOURCE !== '1') process.stderr.write('paddock: no build in dist/ (npm run build): running the sources through tsx\n');
  const { register } = await import('tsx/esm/api');
  register();
  entry = new URL('../cli/index.ts', import.meta.url).href;
}
const { main } = await import(entry);
await main(process.argv.slice(2));

// `node --import tsx --import ./test/helpers/loads/record.ts …` with PADDOCK_LOADS=FILE: every
// module the process loads is recorded, ES modules by the resolve hook (hooks.ts) and CommonJS ones
// (which the loader hooks do not see when loaded with require) from the require cache at exit.
import { appendFileSync, writeFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
import { pathToFileURL } from 'node:url';

const file = process.env.PADDOCK_LOADS;
if (!file) throw new Error('PADDOCK_LOADS names the file the loaded modules are written to');
writeFileSync(file, '');
register('./hooks.ts', import.meta.url, { data: { file } });
const required = createRequire(import.meta.url).cache;
process.on('exit', () =>
  appendFileSync(
    file,
    Object.keys(required)
      .map((path) => `${pathToFileURL(path).href}\n`)
      .join(''),
  ),
);

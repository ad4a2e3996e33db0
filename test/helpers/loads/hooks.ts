// Module hooks (node:module register) that append every URL the ESM loader resolves to a file, one
// a line. Run on the loader's own thread; see record.ts.
import { appendFileSync } from 'node:fs';
import type { ResolveHook } from 'node:module';

let file = '';

export function initialize(data: { file: string }): void {
  file = data.file;
}

export const resolve: ResolveHook = async (specifier, context, next) => {
  const resolved = await next(specifier, context);
  appendFileSync(file, `${resolved.url}\n`);
  return resolved;
};

// Builds the web dashboard (web/) into dist/web: the page, and one bundle of script and one of
// style under assets/ (preact, xterm.js and the page's own code and CSS), made by esbuild. Part of
// `npm run build`; `paddock serve` from the sources builds it on first use when it is missing.
import { copyFile, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { build } from 'esbuild';

const web = path.resolve(import.meta.dirname, '..', 'web');

export async function buildWeb(outDir: string): Promise<void> {
  await rm(outDir, { recursive: true, force: true });
  await mkdir(path.join(outDir, 'assets'), { recursive: true });
  await build({
    entryPoints: { app: path.join(web, 'main.tsx') },
    outdir: path.join(outDir, 'assets'),
    bundle: true,
    format: 'esm',
    target: ['chrome110', 'firefox110', 'safari16'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    minify: true,
    sourcemap: 'linked',
    legalComments: 'eof',
    logLevel: 'warning',
  });
  await copyFile(path.join(web, 'index.html'), path.join(outDir, 'index.html'));
}

if (import.meta.filename === process.argv[1]) await buildWeb(path.resolve(import.meta.dirname, '..', 'dist', 'web'));

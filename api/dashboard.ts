// The web dashboard at `/`: the page and its bundled assets (web/, built by scripts/build-web.ts
// into dist/web as part of `npm run build`). The page holds no data and needs no token: everything
// it shows comes from /v1 with the token the user signs in with, kept in the tab's sessionStorage.
//
// Only the files the build made are served, looked up by exact name (no path from the request ever
// reaches the file system). Every answer carries a Content-Security-Policy without inline scripts or
// eval: the page runs only its own bundle, talks only to this server, and cannot be framed. xterm.js
// makes <style> elements at run time; they carry the answer's nonce, the only style not from a file.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type Koa from 'koa';
import { ApiError } from './errors.js';
import type { Log } from '../protocol/log.js';

interface Assets {
  /** index.html with `%NONCE%` where each answer's nonce goes. */
  page: string;
  files: Map<string, { body: Buffer; type: string }>;
}

const types: Record<string, string> = { '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.map': 'application/json' };

/** The folder the build writes to, seen from this file in api/ (sources) or dist/api (compiled). */
export function dashboardDir(): string {
  const here = import.meta.dirname;
  return path.basename(path.dirname(here)) === 'dist' ? path.resolve(here, '..', 'web') : path.resolve(here, '..', 'dist', 'web');
}

/** Builds the assets when they are missing (running from the sources before `npm run build`). */
async function ensureBuilt(dir: string, log: Log): Promise<void> {
  if (existsSync(path.join(dir, 'index.html'))) return;
  const script = path.resolve(import.meta.dirname, '..', 'scripts', 'build-web.ts');
  if (!import.meta.filename.endsWith('.ts') || !existsSync(script)) throw new Error(`no dashboard assets in ${dir}: run npm run build`);
  log.info({ dir }, "building the dashboard's assets");
  // Built beside and renamed into place, so two servers starting at once never see half a build.
  const scratch = `${dir}.${process.pid}.${randomBytes(4).toString('hex')}`;
  const { buildWeb } = (await import(pathToFileURL(script).href)) as { buildWeb(outDir: string): Promise<void> };
  await buildWeb(scratch);
  await rename(scratch, dir).catch(async (error: NodeJS.ErrnoException) => {
    await rm(scratch, { recursive: true, force: true });
    if (!existsSync(path.join(dir, 'index.html'))) throw error;
  });
}

async function loadAssets(dir: string, log: Log): Promise<Assets> {
  await ensureBuilt(dir, log);
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const name of await readdir(path.join(dir, 'assets'))) {
    const type = types[path.extname(name)];
    if (type) files.set(name, { body: await readFile(path.join(dir, 'assets', name)), type });
  }
  return { page: await readFile(path.join(dir, 'index.html'), 'utf8'), files };
}

function securityHeaders(ctx: Koa.Context, nonce?: string): void {
  ctx.set({
    'Content-Security-Policy': [
      "default-src 'none'",
      "script-src 'self'",
      `style-src 'self'${nonce ? ` 'nonce-${nonce}'` : ''}`,
      "img-src 'self' data:",
      "font-src 'self'",
      "connect-src 'self'",
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join('; '),
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Resource-Policy': 'same-origin',
  });
}

/** Serves GET / and GET /assets/NAME; everything else goes on to the API. */
export function dashboard(log: Log, dir = dashboardDir()): Koa.Middleware {
  let assets: Promise<Assets> | undefined;
  const load = () => {
    assets ??= loadAssets(dir, log).catch((error: unknown) => {
      assets = undefined;
      log.error({ error: (error as Error).message }, 'the dashboard cannot be served');
      throw new ApiError(503, 'dashboard_unavailable', "the dashboard's pages are not built here (npm run build makes them)");
    });
    return assets;
  };
  return async (ctx, next) => {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') return next();
    if (ctx.path === '/') {
      const { page } = await load();
      const nonce = randomBytes(16).toString('base64');
      securityHeaders(ctx, nonce);
      ctx.set('Cache-Control', 'no-store');
      ctx.type = 'text/html; charset=utf-8';
      ctx.body = page.replaceAll('%NONCE%', nonce);
      return;
    }
    const match = /^\/assets\/([A-Za-z0-9._-]+)$/.exec(ctx.path);
    if (!match) return next();
    const file = (await load()).files.get(match[1]);
    if (!file) return next();
    securityHeaders(ctx);
    ctx.set('Cache-Control', 'no-cache');
    ctx.type = file.type;
    ctx.body = file.body;
  };
}

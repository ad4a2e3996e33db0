// Streams a growing log file (a console, a job run's output) as a text answer. With `follow` the
// answer stays open and carries what is appended until `ended()` holds; one last pass after the end
// sends what came in before it. `offset` starts the answer that many bytes in, so a follower whose
// connection broke picks up where it stopped: nothing twice, nothing lost.
import { setTimeout as sleep } from 'node:timers/promises';
import { open, stat } from 'node:fs/promises';
import { PassThrough } from 'node:stream';
import type Koa from 'koa';

/** The query's `offset`: a byte count to start from (0 when absent; its form is checked by api/fields.ts). */
export function offsetOf(ctx: Koa.Context): number {
  return typeof ctx.query.offset === 'string' ? Number(ctx.query.offset) : 0;
}

/**
 * Sets `ctx.body` to the file's text, from `locate()` (which may name no file yet: when following,
 * it is asked again until one appears).
 */
export function streamLog(ctx: Koa.Context, locate: () => Promise<string | undefined>, follow: boolean, ended: () => boolean, start = 0): void {
  ctx.type = 'text/plain; charset=utf-8';
  ctx.set('Cache-Control', 'no-store');
  const body = new PassThrough();
  ctx.body = body;
  void copy(ctx, body, locate, follow, ended, start);
}

async function copy(
  ctx: Koa.Context,
  body: PassThrough,
  locate: () => Promise<string | undefined>,
  follow: boolean,
  ended: () => boolean,
  start: number,
): Promise<void> {
  let offset = start;
  let closed = false;
  let finishing = false;
  let file: string | undefined;
  ctx.req.once('close', () => (closed = true));
  try {
    for (;;) {
      file ??= await locate();
      if (file) {
        const size = await stat(file).then(
          (info) => info.size,
          () => 0,
        );
        if (size > offset) {
          const handle = await open(file, 'r');
          try {
            const buffer = Buffer.alloc(Math.min(size - offset, 1024 * 1024));
            const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
            offset += bytesRead;
            body.write(buffer.subarray(0, bytesRead));
          } finally {
            await handle.close();
          }
          continue;
        }
      }
      if (!follow || closed || finishing) break;
      if (ended()) {
        finishing = true;
        continue;
      }
      await sleep(200);
    }
  } finally {
    body.end();
  }
}

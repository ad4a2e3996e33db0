// /v1/images: upload (a streamed PUT of the raw bytes), list, show, download (with HTTP Range),
// delete.
import type Koa from 'koa';
import { ApiError } from '../errors.js';
import { byteRange } from '../byte-ranges.js';
import { imageView, type ImageCatalog } from '../images.js';
import type { Caller } from '../../protocol/api.js';
import { bounds, duration } from '../fields.js';
import type { Role } from '../../protocol/api.js';
import { peopleRoles, type RouteTable } from './define.js';
import { compareKeys, pageOf, pageQuery, sendPage, slicePage, type Key } from '../pages.js';
import type { ImageListEntry } from '../../protocol/api.js';

/** Agents read images too: their image cache downloads what a reservation boots. */
const readers: Role[] = [...peopleRoles, 'agent'];

const caller = (ctx: Koa.Context) => ctx.state.caller as Caller;
const expirySchema = duration('expiry', bounds.imageExpirySeconds).optional();

export function imageRoutes(table: RouteTable, catalog: ImageCatalog): void {
  table.define(
    {
      method: 'put',
      path: '/v1/images/:name/:tag',
      summary: 'Upload an image: the body is the raw file, streamed; Paddock-Sha256 is checked when sent',
      query: {
        format: 'qcow2 (default), raw or bundle',
        arch: 'architecture label (default x86_64)',
        access:
          'how a reservation key reaches the machine: hook (default; the image reads it the Paddock way), cloud-init (a NoCloud seed) or overlay (appended to a bundle initrd)',
        expires: 'a temporary image: removed after this duration, e.g. 2h',
      },
      // Paddock-Sha256 as a header, or declared in Trailer: and sent after a chunked body; Paddock-Size with a chunked body.
      // Paddock-Sha256-Dropped: client-checks keeps an upload whose announced trailer did not come (a proxy dropped it).
      responses: {
        201: 'stored',
        400: 'more bytes than Paddock-Size announced',
        408: 'no byte for the idle timeout',
        413: 'over the size limit',
        422: 'sha256 mismatch',
        507: 'not enough disk space',
      },
    },
    async (ctx) => {
      const expiry = expirySchema.safeParse(ctx.query.expires);
      if (!expiry.success)
        throw new ApiError(400, 'invalid_parameter', `query parameter expires: ${expiry.error.issues[0].message}`, { in: 'query', parameter: 'expires' });
      const expires = expiry.data;
      // The size comes as Content-Length, or as Paddock-Size with a chunked body; the sha256 as a
      // header, or as a trailer after the body (one pass over the file on the client).
      const length = ctx.get('content-length') || ctx.get('paddock-size');
      const header = ctx.get('paddock-sha256') || undefined;
      // Proxies in front of the API (nginx, Caddy) drop request trailers: a client that compares the
      // answer's sha256 with its own says so, and its upload is kept without the trailer.
      const clientChecks = ctx.get('paddock-sha256-dropped').toLowerCase() === 'client-checks';
      const trailer = /(^|,)\s*paddock-sha256\s*(,|$)/i.test(ctx.get('trailer'))
        ? () => ctx.req.trailers['paddock-sha256'] ?? (clientChecks ? null : undefined)
        : undefined;
      const sha = header ?? trailer;
      // A refused upload's unread rest is not waited for: the answer closes the connection.
      ctx.set('Connection', 'close');
      ctx.body = await catalog.upload(
        caller(ctx),
        {
          name: ctx.params.name,
          tag: ctx.params.tag,
          format: String(ctx.query.format ?? 'qcow2'),
          arch: String(ctx.query.arch ?? 'x86_64'),
          ...(ctx.query.access === undefined ? {} : { access: String(ctx.query.access) }),
          ...(expires === undefined ? {} : { expiresInSeconds: expires }),
          ...(sha ? { expectedSha256: sha } : {}),
          ...(length ? { contentLength: Number(length) } : {}),
        },
        ctx.req,
      );
      ctx.status = 201;
      ctx.remove('Connection');
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/images',
      summary: 'Every image Paddock stores (origin paddock), then the images each OpenStack pool can boot (origin openstack, ref POOL/NAME)',
      roles: readers,
      query: { origin: 'paddock: only the images Paddock stores', ...pageQuery },
    },
    async (ctx) => {
      const origin = ctx.query.origin;
      if (origin !== undefined && origin !== 'paddock') throw new ApiError(400, 'invalid_request', 'origin is paddock or absent');
      const { images, errors } = await catalog.listAll(origin === 'paddock');
      // A pool that cannot be asked does not hide the others: it is named in a header.
      if (errors.length > 0)
        ctx.set(
          'Paddock-Warning',
          errors.map((error) => encodeURIComponent(`pool ${error.pool}: ${error.message}`)),
        );
      // Paddock's own by name and tag, then each pool's by ref.
      const key = (image: ImageListEntry): Key => (image.origin === 'paddock' ? [0, image.name, image.tag] : [1, image.ref, '']);
      sendPage(
        ctx,
        slicePage(
          images.sort((a, b) => compareKeys(key(a), key(b))),
          key,
          pageOf(ctx, 3),
        ),
      );
    },
  );

  table.define({ method: 'get', path: '/v1/images/:name/:tag', summary: 'One image', roles: readers }, async (ctx) => {
    ctx.body = imageView(await catalog.get(ctx.params.name, ctx.params.tag));
  });

  table.define(
    {
      method: 'get',
      path: '/v1/images/:name/:tag/content',
      summary: 'Download an image; one HTTP Range (bytes=a-b, a- or -n) is honoured, with If-Range on its ETag (the quoted sha256)',
      roles: readers,
      responses: {
        200: 'the whole file (also for a malformed Range, ranges that stay apart, or an If-Range that does not match)',
        206: 'a range',
        416: 'no range inside the file',
      },
    },
    async (ctx) => {
      const row = await catalog.get(ctx.params.name, ctx.params.tag);
      // A reader that takes no byte for the idle timeout is dropped; a slow one is served as long as it reads.
      ctx.req.setTimeout(catalog.idleTimeoutMs, () => ctx.req.socket.destroy());
      ctx.res.once('finish', () => ctx.req.setTimeout(0));
      const size = Number(row.size);
      ctx.set('Accept-Ranges', 'bytes');
      const etag = `"${row.sha256}"`;
      ctx.set('ETag', etag);
      ctx.type = 'application/octet-stream';
      const range = byteRange({ range: ctx.get('range'), ifRange: ctx.get('if-range'), etag }, size);
      if (range.kind === 'unsatisfiable') {
        ctx.set('Content-Range', `bytes */${size}`);
        throw new ApiError(416, 'range_not_satisfiable', `no range of ${JSON.stringify(ctx.get('range').slice(0, 200))} is inside the file's ${size} bytes`);
      }
      if (range.kind === 'part') {
        ctx.status = 206;
        ctx.set('Content-Range', `bytes ${range.start}-${range.end}/${size}`);
        ctx.length = range.end - range.start + 1;
        ctx.body = catalog.read(row, range);
      } else {
        ctx.length = size;
        ctx.body = catalog.read(row);
      }
    },
  );

  table.define(
    { method: 'delete', path: '/v1/images/:name/:tag', summary: 'Delete an image (its owner or an admin; refused while a live reservation uses it)' },
    async (ctx) => {
      await catalog.remove(caller(ctx), ctx.params.name, ctx.params.tag);
      ctx.status = 204;
    },
  );
}

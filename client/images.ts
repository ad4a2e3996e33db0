// Images in the client library: upload a file (streamed, its sha256 sent so the server checks
// it), list, show, download (whole or a byte range), remove. A reference is `name` or `name:tag`.
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { ImageAccess, ImageFormat, ImageListEntry, ImageView } from '../protocol/api.js';
import { PaddockError } from './errors.js';
import type { Http } from './http.js';

export interface UploadOptions {
  name: string;
  tag?: string;
  format?: ImageFormat;
  arch?: string;
  /** How a reservation's key reaches a machine booted from it (default hook: the image reads it the Paddock way). */
  access?: ImageAccess;
  /** A temporary image: removed after this long, e.g. `2h`. */
  expires?: string;
  onProgress?: (sent: number, total: number) => void;
}

function path(ref: string): string {
  const [name, tag = 'latest', ...rest] = ref.split(':');
  if (!name || rest.length > 0) throw new PaddockError(`not an image reference: ${JSON.stringify(ref)} (use name or name:tag)`, 'invalid_name');
  return `v1/images/${encodeURIComponent(name)}/${encodeURIComponent(tag)}`;
}

export class Images {
  constructor(private readonly http: Http) {}

  async upload(file: string, options: UploadOptions): Promise<ImageView> {
    const { size } = await stat(file);
    const searchParams: Record<string, string> = { format: options.format ?? 'qcow2', arch: options.arch ?? 'x86_64' };
    if (options.expires) searchParams.expires = options.expires;
    if (options.access) searchParams.access = options.access;
    // One read of the file: its sha256 follows the bytes as a trailer, checked by the server.
    const ref = `${options.name}:${options.tag ?? 'latest'}`;
    const { body: image, sha256 } = await this.http.putWithDigest<ImageView>(path(ref), {
      body: createReadStream(file, { highWaterMark: 1024 * 1024 }),
      size,
      headers: { 'content-type': 'application/octet-stream' },
      searchParams,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    // A proxy in front of the API that drops the trailer leaves the check to here: the answer
    // carries the sha256 of the bytes stored.
    if (image.sha256 !== sha256) {
      await this.remove(ref).catch(() => undefined);
      throw new PaddockError(
        `sha256 mismatch: ${file} hashes to ${sha256}, the bytes Paddock stored to ${image.sha256}; the image was removed`,
        'checksum_mismatch',
      );
    }
    return image;
  }

  /**
   * Paddock's images and the images of each provider pool (OpenStack), marked by `origin`;
   * `origin: 'paddock'` lists only Paddock's. `warnings` names pools that could not be asked.
   */
  async list(options: { origin?: 'paddock' } = {}): Promise<ImageListEntry[]> {
    return (await this.listing(options)).images;
  }

  async listing(options: { origin?: 'paddock' } = {}): Promise<{ images: ImageListEntry[]; warnings: string[] }> {
    const { items: body, headers } = await this.http.getAll<ImageListEntry>('v1/images', options.origin ? { origin: options.origin } : {});
    const header = headers['paddock-warning'];
    const warnings = header === undefined ? [] : (Array.isArray(header) ? header : [header]).map((each) => decodeURIComponent(each));
    return { images: body, warnings };
  }

  async show(ref: string): Promise<ImageView> {
    return this.http.get(path(ref));
  }

  async remove(ref: string): Promise<void> {
    await this.http.delete(path(ref));
  }

  /** Downloads into `file`; `range` is `start-end` (bytes, inclusive) for part of it. */
  async download(
    ref: string,
    file: string,
    options: { range?: string; onProgress?: (received: number, total: number | undefined) => void } = {},
  ): Promise<void> {
    await this.http.download(`${path(ref)}/content`, createWriteStream(file), {
      ...(options.range ? { range: `bytes=${options.range}` } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  }
}

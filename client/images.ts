// Images in the client library: upload a file (streamed, its sha256 sent so the server checks
// it), list, show, download (whole or a byte range), remove. A reference is `name` or `name:tag`.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { ImageFormat, ImageView } from '../api/contract.js';
import { PaddockError } from './errors.js';
import type { Http } from './http.js';

export interface UploadOptions {
  name: string;
  tag?: string;
  format?: ImageFormat;
  arch?: string;
  /** A temporary image: removed after this long, e.g. `2h`. */
  expires?: string;
  onProgress?: (sent: number, total: number) => void;
}

function path(ref: string): string {
  const [name, tag = 'latest', ...rest] = ref.split(':');
  if (!name || rest.length > 0) throw new PaddockError(`not an image reference: ${JSON.stringify(ref)} (use name or name:tag)`, 'invalid_name');
  return `v1/images/${encodeURIComponent(name)}/${encodeURIComponent(tag)}`;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

export class Images {
  constructor(private readonly http: Http) {}

  async upload(file: string, options: UploadOptions): Promise<ImageView> {
    const { size } = await stat(file);
    const sha256 = await sha256File(file);
    const searchParams: Record<string, string> = { format: options.format ?? 'qcow2', arch: options.arch ?? 'x86_64' };
    if (options.expires) searchParams.expires = options.expires;
    return this.http.put<ImageView>(path(`${options.name}:${options.tag ?? 'latest'}`), {
      body: createReadStream(file),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size), 'paddock-sha256': sha256 },
      searchParams,
      ...(options.onProgress ? { onProgress: (sent: number) => options.onProgress!(sent, size) } : {}),
    });
  }

  list(): Promise<ImageView[]> {
    return this.http.get('v1/images');
  }

  async show(ref: string): Promise<ImageView> {
    return this.http.get(path(ref));
  }

  async remove(ref: string): Promise<void> {
    await this.http.delete(path(ref));
  }

  /** Downloads into `file`; `range` is `start-end` (bytes, inclusive) for part of it. */
  async download(ref: string, file: string, options: { range?: string; onProgress?: (received: number, total: number | undefined) => void } = {}): Promise<void> {
    await this.http.download(`${path(ref)}/content`, createWriteStream(file), {
      ...(options.range ? { range: `bytes=${options.range}` } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  }
}

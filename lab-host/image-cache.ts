// The agent's image cache: images named by reservations are downloaded from the API's image store
// (GET /v1/images/NAME/TAG, then its content) into DIR/<sha256>, checked against the sha256 on the
// way, and renamed into place only when whole. One download per sha256 at a time; later
// reservations of the same bytes use the file directly. A remote lab host takes the same path as
// the agent inside `paddock serve`. A download has no limit on its whole length (a large image on a
// slow network takes what it takes); it fails when no byte comes for the idle timeout.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, rename, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Got } from 'got';
import type { ImageFormat } from '../protocol/api.js';
import { ProvisionError, type ImageSource, type LocalImage } from '../provisioners/types.js';

interface ImageMetadata {
  ref: string;
  format: ImageFormat;
  arch: string;
  size: number;
  sha256: string;
}

export class ImageCache implements ImageSource {
  private readonly downloads = new Map<string, Promise<void>>();

  constructor(
    private readonly http: Got,
    readonly dir: string,
    private readonly idleTimeoutMs = 60_000,
  ) {}

  /** The digest of every image the API stores: all pages of the list (a sweep trusts it to be whole). */
  async stored(): Promise<Set<string>> {
    const digests = new Set<string>();
    for (let cursor: string | undefined, first = true; first || cursor; first = false) {
      const page = await this.http.get('v1/images', { searchParams: { origin: 'paddock', limit: 1000, ...(cursor ? { cursor } : {}) }, responseType: 'json' });
      for (const image of page.body as { sha256: string }[]) digests.add(image.sha256);
      const next = page.headers['paddock-next-cursor'];
      cursor = typeof next === 'string' ? next : undefined;
    }
    return digests;
  }

  async fetch(ref: string, signal?: AbortSignal): Promise<LocalImage> {
    const [name, tag = 'latest'] = ref.split(':');
    let metadata: ImageMetadata;
    try {
      metadata = (await this.http
        .get(`v1/images/${encodeURIComponent(name)}/${encodeURIComponent(tag)}`, { responseType: 'json', ...(signal ? { signal } : {}) })
        .json()) as ImageMetadata;
    } catch (error) {
      const status = (error as { response?: { statusCode?: number } }).response?.statusCode;
      if (status === 404 || status === 400) {
        throw new ProvisionError(`image ${ref} does not exist in Paddock's image store`, 'request', undefined, { code: 'image_not_found' });
      }
      throw new ProvisionError(`cannot look up image ${ref}: ${(error as Error).message}`, 'infrastructure', undefined, { code: 'image_fetch_failed' });
    }
    const file = path.join(this.dir, metadata.sha256);
    if (!(await isFile(file))) {
      let download = this.downloads.get(metadata.sha256);
      if (!download) {
        download = this.download(metadata, file).finally(() => this.downloads.delete(metadata.sha256));
        this.downloads.set(metadata.sha256, download);
      }
      await download;
    } else {
      // Last use, for whoever trims the cache.
      const now = new Date();
      await utimes(file, now, now).catch(() => undefined);
    }
    return { ref: metadata.ref, sha256: metadata.sha256, format: metadata.format, arch: metadata.arch, size: metadata.size, file };
  }

  private async download(metadata: ImageMetadata, file: string): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const partial = `${file}.part-${randomBytes(4).toString('hex')}`;
    const hash = createHash('sha256');
    let size = 0;
    const [name, tag] = metadata.ref.split(':');
    try {
      await pipeline(
        this.http.stream(`v1/images/${encodeURIComponent(name)}/${encodeURIComponent(tag)}/content`, {
          // Not the client's limit on a whole request: idle limits only.
          timeout: { request: undefined, connect: this.idleTimeoutMs, response: this.idleTimeoutMs, socket: this.idleTimeoutMs },
        }),
        new Transform({
          transform(chunk: Buffer, _encoding, callback) {
            hash.update(chunk);
            size += chunk.length;
            callback(null, chunk);
          },
        }),
        createWriteStream(partial, { mode: 0o600 }),
      );
      const sha256 = hash.digest('hex');
      if (sha256 !== metadata.sha256 || size !== metadata.size) {
        throw new Error(`the download of ${metadata.ref} does not match its sha256 (got ${size} bytes, sha256 ${sha256.slice(0, 12)}…)`);
      }
      await rename(partial, file);
    } catch (error) {
      await rm(partial, { force: true });
      if ((error as { code?: string }).code === 'ETIMEDOUT') {
        const idle = `no byte came for ${this.idleTimeoutMs / 1000} s`;
        throw new ProvisionError(`cannot download image ${metadata.ref}: the download stalled (${idle})`, 'infrastructure', undefined, {
          code: 'image_download_stalled',
        });
      }
      throw new ProvisionError(`cannot download image ${metadata.ref}: ${(error as Error).message}`, 'infrastructure', undefined, {
        code: 'image_fetch_failed',
      });
    }
  }
}

async function isFile(file: string): Promise<boolean> {
  return stat(file).then(
    (info) => info.isFile(),
    () => false,
  );
}

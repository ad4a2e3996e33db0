// The agent's image cache: images named by reservations are downloaded from the API's image store
// (GET /v1/images/NAME/TAG, then its content) into DIR/<sha256>, checked against the sha256 on the
// way, and renamed into place only when whole. Until then the bytes sit in DIR/<sha256>.partial,
// never taken for the image: a broken connection, a stall or a restart of the agent loses nothing,
// the download goes on from there with an HTTP Range. One download per sha256 at a time (one agent
// per data directory); later reservations of the same bytes use the file directly. A remote lab
// host takes the same path as the agent inside `paddock serve`. A download has no limit on its
// whole length (a large image on a slow network takes what it takes); it fails when no byte comes
// for the idle timeout.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rm, rename, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Got } from 'got';
import { imageAccesses, type ImageAccess, type ImageFormat } from '../protocol/api.js';
import { ProvisionError, type ImageSource, type LocalImage } from '../provisioners/types.js';

interface ImageMetadata {
  ref: string;
  format: ImageFormat;
  arch: string;
  access?: ImageAccess;
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
    // The digest names files here: only a digest is taken.
    if (!/^[0-9a-f]{64}$/.test(String(metadata.sha256)))
      throw new ProvisionError(`image ${ref} has no valid sha256`, 'infrastructure', undefined, { code: 'image_fetch_failed' });
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
    // An API older than image access serves only hook images.
    const access = imageAccesses.includes(metadata.access as ImageAccess) ? (metadata.access as ImageAccess) : 'hook';
    return { ref: metadata.ref, sha256: metadata.sha256, format: metadata.format, arch: metadata.arch, access, size: metadata.size, file };
  }

  /**
   * Downloads the image into DIR/<sha256>.partial, then renames it into place once its bytes make
   * the sha256. A connection that breaks leaves what came in the partial, and the next attempt asks
   * for the rest (Range from the partial's size, If-Range on the image's ETag) after hashing the
   * bytes already there, so the whole file is still checked. A partial that turns out wrong (the
   * sha256 does not match at the end, or the API sends the whole file, or refuses the range) is
   * thrown away and the image downloaded whole. A stalled download keeps its partial for the next
   * reservation, which resumes it; so does an agent that restarts.
   */
  private async download(metadata: ImageMetadata, file: string): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const partial = `${file}.partial`;
    // Broken connections in a row that brought no byte; an attempt that brings some starts the count again.
    let fruitless = 0;
    for (;;) {
      const attempt = await this.attempt(metadata, partial);
      if (attempt.result === 'placed') return;
      if (attempt.result === 'wrong') {
        await rm(partial, { force: true });
        if (attempt.from === 0) throw fetchFailed(metadata, attempt.why);
        continue;
      }
      fruitless = attempt.gained > 0 ? 0 : fruitless + 1;
      if (fruitless >= maxFruitlessAttempts) throw fetchFailed(metadata, attempt.why);
      await sleep(250 * fruitless);
    }
  }

  /** One request for what the partial lacks; the partial holds exactly the bytes that came, whatever happens. */
  private async attempt(metadata: ImageMetadata, partial: string): Promise<Attempt> {
    let hash = createHash('sha256');
    let from = await hashFile(hash, partial, metadata.size);
    if (from > metadata.size) return { result: 'wrong', from, why: 'the partial download is longer than the image' };
    if (from === metadata.size) return this.place(metadata, partial, hash, from);
    const [name, tag] = metadata.ref.split(':');
    const request = this.http.stream(`v1/images/${encodeURIComponent(name)}/${encodeURIComponent(tag)}/content`, {
      throwHttpErrors: false,
      headers: from > 0 ? { range: `bytes=${from}-`, 'if-range': `"${metadata.sha256}"` } : {},
      // Not the client's limit on a whole request: idle limits only.
      timeout: { request: undefined, connect: this.idleTimeoutMs, response: this.idleTimeoutMs, socket: this.idleTimeoutMs },
    });
    let gained = 0;
    try {
      const status = await new Promise<number>((resolve, reject) => {
        request.once('response', (response: { statusCode: number }) => resolve(response.statusCode));
        request.once('error', reject);
      });
      if (status === 416) return { result: 'wrong', from, why: 'the API has no such range' };
      if (status !== 200 && status !== 206) {
        if (status === 404) await rm(partial, { force: true });
        throw fetchFailed(metadata, `the API answered ${status}`);
      }
      if (status === 206 && request.response?.headers['content-range'] !== `bytes ${from}-${metadata.size - 1}/${metadata.size}`)
        return { result: 'wrong', from, why: `the API sent another range (${request.response?.headers['content-range']})` };
      // The whole file after all (the API has other bytes under this ETag, or ignored the range): it replaces the partial.
      if (status === 200 && from > 0) [hash, from] = [createHash('sha256'), 0];
      return await this.receive(metadata, partial, request, hash, from, (bytes) => (gained = bytes));
    } catch (error) {
      if (error instanceof ProvisionError) throw error;
      if ((error as { code?: string }).code === 'ETIMEDOUT') {
        const idle = `no byte came for ${this.idleTimeoutMs / 1000} s`;
        throw new ProvisionError(`cannot download image ${metadata.ref}: the download stalled (${idle})`, 'infrastructure', undefined, {
          code: 'image_download_stalled',
        });
      }
      return { result: 'broken', gained, why: (error as Error).message };
    } finally {
      request.destroy();
    }
  }

  /** Appends the answer's bytes to the partial (from `from`, truncating what follows), one chunk written before the next is read. */
  private async receive(
    metadata: ImageMetadata,
    partial: string,
    body: AsyncIterable<Buffer>,
    hash: Hash,
    from: number,
    progress: (gained: number) => void,
  ): Promise<Attempt> {
    const handle = await open(partial, from > 0 ? 'r+' : 'w', 0o600);
    let size = from;
    try {
      await handle.truncate(from);
      for await (const chunk of body) {
        if (size + chunk.length > metadata.size) return { result: 'wrong', from, why: `the API sent more than the image's ${metadata.size} bytes` };
        hash.update(chunk);
        for (let offset = 0; offset < chunk.length;) offset += (await handle.write(chunk, offset, chunk.length - offset, size + offset)).bytesWritten;
        size += chunk.length;
        progress(size - from);
      }
    } finally {
      await handle.close();
    }
    if (size < metadata.size) return { result: 'broken', gained: size - from, why: `the answer ended after ${size} of ${metadata.size} bytes` };
    return this.place(metadata, partial, hash, from);
  }

  /** The partial is whole: the image if its bytes make the sha256. */
  private async place(metadata: ImageMetadata, partial: string, hash: Hash, from: number): Promise<Attempt> {
    const sha256 = hash.digest('hex');
    if (sha256 !== metadata.sha256) return { result: 'wrong', from, why: `the download does not match its sha256 (got sha256 ${sha256.slice(0, 12)}…)` };
    await rename(partial, path.join(this.dir, metadata.sha256));
    return { result: 'placed' };
  }
}

/** How an attempt ended: the image in place, a partial that cannot make it (`from`: where the attempt started), or a connection that broke. */
type Attempt = { result: 'placed' } | { result: 'wrong'; from: number; why: string } | { result: 'broken'; gained: number; why: string };

/** Broken connections in a row without a byte before a download gives up (its partial stays). */
const maxFruitlessAttempts = 3;

function fetchFailed(metadata: ImageMetadata, why: string): ProvisionError {
  return new ProvisionError(`cannot download image ${metadata.ref}: ${why}`, 'infrastructure', undefined, { code: 'image_fetch_failed' });
}

/** Hashes the first bytes of `file` (none if it does not exist); its size. A file longer than `limit` is not read. */
async function hashFile(hash: Hash, file: string, limit: number): Promise<number> {
  const size = await stat(file).then(
    (info) => info.size,
    () => 0,
  );
  if (size === 0 || size > limit) return size;
  for await (const chunk of createReadStream(file, { end: size - 1 })) hash.update(chunk as Buffer);
  return size;
}

async function isFile(file: string): Promise<boolean> {
  return stat(file).then(
    (info) => info.isFile(),
    () => false,
  );
}

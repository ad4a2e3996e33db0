// The image store's files: content-addressed blobs under <dataDir>/images/blobs/sha256/<hex>, so
// the same bytes uploaded twice are kept once. An upload streams to a temporary file while its
// sha256 is computed (never the whole file in memory), is checked against the size limit and the
// expected digest as it goes, and only a complete, verified upload is moved into place.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { randomBytes } from 'node:crypto';

/** Why an upload was refused; the API maps `reason` to an HTTP status and a stable code. */
export class UploadError extends Error {
  constructor(
    message: string,
    readonly reason: 'too_large' | 'checksum_mismatch' | 'no_space' | 'empty' | 'aborted',
  ) {
    super(message);
    this.name = 'UploadError';
  }
}

export interface StoredBlob {
  sha256: string;
  size: number;
}

const sha256Pattern = /^[0-9a-f]{64}$/;

export class BlobStore {
  private readonly blobs: string;
  private readonly incoming: string;

  constructor(
    readonly root: string,
    /** Free space to keep on the disk after an upload, in bytes. */
    private readonly reserveBytes = 256 * 1024 * 1024,
  ) {
    this.blobs = path.join(root, 'blobs', 'sha256');
    this.incoming = path.join(root, 'incoming');
  }

  async init(): Promise<void> {
    await mkdir(this.blobs, { recursive: true, mode: 0o700 });
    await rm(this.incoming, { recursive: true, force: true }); // uploads cut off by a crash
    await mkdir(this.incoming, { recursive: true, mode: 0o700 });
  }

  /** The file of a blob; the digest is checked so no name can point outside the store. */
  pathOf(sha256: string): string {
    if (!sha256Pattern.test(sha256)) throw new Error(`not a sha256 digest: ${JSON.stringify(sha256)}`);
    return path.join(this.blobs, sha256);
  }

  /** Refuses an upload the disk cannot take before a byte is read. */
  async checkSpace(expectedBytes: number): Promise<void> {
    const fs = await statfs(this.root);
    const free = fs.bavail * fs.bsize;
    if (expectedBytes + this.reserveBytes > free) {
      throw new UploadError(`not enough disk space: ${expectedBytes} bytes asked, ${Math.max(0, free - this.reserveBytes)} available`, 'no_space');
    }
  }

  /**
   * Streams `source` into the store. Stops reading and keeps nothing when the size passes
   * `maxBytes` or the digest differs from `expectedSha256`.
   */
  async receive(source: Readable, options: { maxBytes: number; expectedSha256?: string | (() => string | undefined) }): Promise<StoredBlob> {
    const temporary = path.join(this.incoming, randomBytes(8).toString('hex'));
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        size += chunk.length;
        if (size > options.maxBytes) return callback(new UploadError(`the upload is larger than the limit of ${options.maxBytes} bytes`, 'too_large'));
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    try {
      await pipeline(source, meter, createWriteStream(temporary, { mode: 0o600 }));
    } catch (error) {
      await rm(temporary, { force: true });
      if (error instanceof UploadError) throw error;
      throw new UploadError(`the upload was cut off: ${(error as Error).message}`, 'aborted');
    }
    const sha256 = hash.digest('hex');
    if (size === 0) {
      await rm(temporary, { force: true });
      throw new UploadError('the upload is empty', 'empty');
    }
    // A digest sent after the bytes (a trailer) is read only now.
    const expected = typeof options.expectedSha256 === 'function' ? (options.expectedSha256() ?? '(none: the announced trailer did not come)') : options.expectedSha256;
    if (expected !== undefined && expected.toLowerCase() !== sha256) {
      await rm(temporary, { force: true });
      throw new UploadError(`sha256 mismatch: the client said ${expected.slice(0, 80)}, the bytes received hash to ${sha256}`, 'checksum_mismatch');
    }
    const target = this.pathOf(sha256);
    if (await exists(target)) await rm(temporary, { force: true });
    else await rename(temporary, target);
    return { sha256, size };
  }

  read(sha256: string, range?: { start: number; end: number }): Readable {
    return createReadStream(this.pathOf(sha256), range);
  }

  async remove(sha256: string): Promise<void> {
    await rm(this.pathOf(sha256), { force: true });
  }

  /** Every digest on disk, for collecting blobs no image refers to any more. */
  async list(): Promise<string[]> {
    return (await readdir(this.blobs)).filter((name) => sha256Pattern.test(name));
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

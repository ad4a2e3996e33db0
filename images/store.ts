// The image store's files: content-addressed blobs under <dataDir>/images/blobs/sha256/<hex>, so
// the same bytes uploaded twice are kept once. An upload streams to a temporary file while its
// sha256 is computed (never the whole file in memory), is checked against the size limit, its
// grant of disk space (space.ts) and the expected digest as it goes, and only a complete, verified
// upload is placed. A stream that brings no byte for the idle timeout is cut, however long it has
// lasted: a large image on a slow network takes as long as it needs.
//
// Whether a blob exists and whether an image record names it change together: the catalog places
// or removes a blob and writes the records that name it inside `withDigest(sha256, …)`, which runs
// one task per digest at a time. So no record ever names a missing file.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DiskSpace, SpaceRefused, type SpaceGrant } from './space.js';
import { KeyedQueue } from './keyed-queue.js';

/** Why an upload was refused; the API maps `reason` to an HTTP status and a stable code. */
export class UploadError extends Error {
  constructor(
    message: string,
    readonly reason: 'too_large' | 'size_mismatch' | 'checksum_mismatch' | 'no_space' | 'empty' | 'aborted' | 'stalled',
  ) {
    super(message);
    this.name = 'UploadError';
  }
}

export interface StoredBlob {
  sha256: string;
  size: number;
}

/** A verified upload in the incoming folder, not yet a blob: `place` it (under its digest's lock) or `discard` it. */
export interface ReceivedBlob extends StoredBlob {
  place(): Promise<void>;
  discard(): Promise<void>;
}

export interface ReceiveOptions {
  maxBytes: number;
  /**
   * The sha256 the client sent, or how to read it once the body is in (an HTTP trailer): undefined
   * when it did not come (a mismatch), null when it did not come and the client checks the digest
   * the answer carries itself (a proxy in front of the API dropped the trailer).
   */
  expectedSha256?: string | (() => string | null | undefined);
  /** The disk space granted to this upload (DiskSpace.grant). */
  grant: SpaceGrant;
  /** No byte for this long cuts the upload (`stalled`). */
  idleTimeoutMs: number;
}

const sha256Pattern = /^[0-9a-f]{64}$/;
/** How many bytes an upload writes between two looks at the disk's free space. */
const checkEvery = 4 * 1024 * 1024;

export class BlobStore {
  private readonly blobs: string;
  private readonly incoming: string;
  readonly space: DiskSpace;
  private readonly digestQueues = new KeyedQueue();

  constructor(
    readonly root: string,
    /** Free space no upload may take (the database's and the logs' floor), in bytes. */
    reserveBytes = 256 * 1024 * 1024,
  ) {
    this.blobs = path.join(root, 'blobs', 'sha256');
    this.incoming = path.join(root, 'incoming');
    this.space = new DiskSpace(root, reserveBytes);
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

  /** Runs `task` when no other task of the same digest runs (in call order). */
  withDigest<T>(sha256: string, task: () => Promise<T>): Promise<T> {
    return this.digestQueues.run(sha256, task);
  }

  /** Grants the space an upload of up to `bytes` needs, or refuses it (`no_space`) before a byte is read. */
  async grant(bytes: number): Promise<SpaceGrant> {
    try {
      return await this.space.grant(bytes);
    } catch (error) {
      if (error instanceof SpaceRefused) throw new UploadError(error.message, 'no_space');
      throw error;
    }
  }

  /**
   * Streams `source` into the incoming folder. Stops reading and keeps nothing when the size passes
   * `maxBytes` or the grant, the disk fills, the stream stalls, or the digest differs from
   * `expectedSha256`. The source is unpiped, never destroyed, so the caller can still answer on it.
   */
  async receive(source: Readable, options: ReceiveOptions): Promise<ReceivedBlob> {
    const temporary = path.join(this.incoming, randomBytes(8).toString('hex'));
    const hash = createHash('sha256');
    let size = 0;
    let unchecked = 0;
    const space = this.space;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        size += chunk.length;
        if (size > options.maxBytes) return callback(new UploadError(`the upload is larger than the limit of ${options.maxBytes} bytes`, 'too_large'));
        if (!options.grant.use(chunk.length))
          return callback(new UploadError(`the upload is larger than the ${options.grant.limit} bytes it announced`, 'size_mismatch'));
        hash.update(chunk);
        unchecked += chunk.length;
        if (unchecked < checkEvery) return callback(null, chunk);
        unchecked = 0;
        space.check().then(
          () => callback(null, chunk),
          (error: unknown) => callback(error instanceof SpaceRefused ? new UploadError(error.message, 'no_space') : (error as Error)),
        );
      },
    });
    const guarded = guard(source, options.idleTimeoutMs);
    try {
      await pipeline(guarded, meter, createWriteStream(temporary, { mode: 0o600 }));
    } catch (error) {
      await rm(temporary, { force: true });
      throw uploadError(error);
    } finally {
      guarded.stop();
    }
    const sha256 = hash.digest('hex');
    const discard = () => rm(temporary, { force: true });
    if (size === 0) {
      await discard();
      throw new UploadError('the upload is empty', 'empty');
    }
    // A digest sent after the bytes (a trailer) is read only now.
    const trailer = typeof options.expectedSha256 === 'function' ? options.expectedSha256() : undefined;
    const expected =
      typeof options.expectedSha256 === 'function'
        ? trailer === null
          ? undefined
          : (trailer ?? '(none: the announced trailer did not come)')
        : options.expectedSha256;
    if (expected !== undefined && expected.toLowerCase() !== sha256) {
      await discard();
      throw new UploadError(`sha256 mismatch: the client said ${expected.slice(0, 80)}, the bytes received hash to ${sha256}`, 'checksum_mismatch');
    }
    const target = this.pathOf(sha256);
    return {
      sha256,
      size,
      discard,
      // Call inside withDigest(sha256): the same bytes already stored are kept, the copy dropped.
      place: async () => {
        if (await exists(target)) await discard();
        else await rename(temporary, target);
      },
    };
  }

  read(sha256: string, range?: { start: number; end: number }): Readable {
    return createReadStream(this.pathOf(sha256), range);
  }

  async exists(sha256: string): Promise<boolean> {
    return exists(this.pathOf(sha256));
  }

  /** Call inside withDigest(sha256), once no record names it. */
  async remove(sha256: string): Promise<void> {
    await rm(this.pathOf(sha256), { force: true });
  }

  /** Every digest on disk, for collecting blobs no image refers to any more. */
  async list(): Promise<string[]> {
    return (await readdir(this.blobs)).filter((name) => sha256Pattern.test(name));
  }
}

/**
 * The bytes of `source` through a stream the pipeline may destroy without destroying `source`
 * (an HTTP request the API still answers on). It fails as `stalled` when no byte comes for
 * `idleTimeoutMs`, and as `aborted` when the source fails or closes early.
 */
function guard(source: Readable, idleTimeoutMs: number): PassThrough & { stop(): void } {
  const through = new PassThrough();
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => through.destroy(new UploadError(`no byte came for ${idleTimeoutMs / 1000} s: the upload stalled`, 'stalled')), idleTimeoutMs);
  };
  const onError = (error: Error) => through.destroy(error);
  const onAborted = () => through.destroy(new Error('the client went away'));
  source.on('data', arm);
  source.on('error', onError);
  source.on('aborted', onAborted);
  source.pipe(through);
  arm();
  const stop = () => {
    clearTimeout(timer);
    source.off('data', arm);
    source.off('error', onError);
    source.off('aborted', onAborted);
    source.unpipe(through);
    source.pause();
  };
  return Object.assign(through, { stop });
}

function uploadError(error: unknown): UploadError {
  if (error instanceof UploadError) return error;
  if ((error as NodeJS.ErrnoException).code === 'ENOSPC') return new UploadError('the disk is full', 'no_space');
  return new UploadError(`the upload was cut off: ${(error as Error).message}`, 'aborted');
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

// The image catalog: name:tag records in the database over the content-addressed blob store in
// images/. Uploads stream straight from the request into the store; records are visible to every
// user, removable by their owner or an admin, never while a live reservation names them; expired
// temporary images and blobs no record refers to are collected.
import path from 'node:path';
import type { Readable } from 'node:stream';
import { Op, QueryTypes, type WhereOptions } from 'sequelize';
import { imageAccesses, type ImageAccess, type ImageFormat, type ImageListEntry, type ImageView, type ProviderImage } from '../protocol/api.js';

import { detectBundleAccess } from '../images/initrd-overlay.js';
import { plainRow, plainRows, type Database, type ImageRow } from './db/index.js';
import { DomainError, forbidden, notFound, type DomainCode } from './domain-error.js';
import type { Quotas } from './quotas.js';
import type { Caller } from '../protocol/api.js';
import { KeyedQueue } from '../images/keyed-queue.js';
import { BlobStore, UploadError } from '../images/store.js';

export const imageFormats: readonly ImageFormat[] = ['qcow2', 'raw', 'bundle'];
const namePattern = /^[a-z0-9][a-z0-9._-]{0,99}$/;

export interface ImageLimits {
  maxSize: number;
  maxExpiry: number;
  /** Seconds without a byte after which an upload is cut (never a limit on its whole length). */
  idleTimeout: number;
}

export interface UploadRequest {
  name: string;
  tag: string;
  format: string;
  arch: string;
  /** How a reservation's key reaches the machine (default hook). */
  access?: string;
  expiresInSeconds?: number;
  /** The sha256 the client sent, or how to read it once the body is in (an HTTP trailer; see ReceiveOptions). */
  expectedSha256?: string | (() => string | null | undefined);
  contentLength?: number;
}

/** Checks a name or tag: no slashes, no dots at the start, nothing that could leave the store. */
export function checkName(what: 'name' | 'tag', value: string): string {
  if (!namePattern.test(value) || value.includes('..')) {
    throw new DomainError('invalid_name', `image ${what} ${JSON.stringify(value)} is not allowed: use a-z, 0-9, . _ - (no "..", up to 100)`, {
      [what]: value,
    });
  }
  return value;
}

/** `name` or `name:tag` (tag latest by default). */
export function parseRef(ref: string): { name: string; tag: string } {
  const [name, tag = 'latest', ...rest] = ref.split(':');
  if (rest.length > 0) throw new DomainError('invalid_name', `not an image reference: ${JSON.stringify(ref)} (use name or name:tag)`);
  return { name: checkName('name', name), tag: checkName('tag', tag) };
}

export function imageView(row: ImageRow): ImageView {
  return {
    ref: row.ref,
    name: row.name,
    tag: row.tag,
    format: row.format as ImageFormat,
    arch: row.arch,
    access: (row.access ?? 'hook') as ImageAccess,
    size: Number(row.size),
    sha256: row.sha256,
    owner: row.owner,
    createdAt: new Date(row.createdAt).toISOString(),
    ...(row.expiresAt ? { expiresAt: new Date(row.expiresAt).toISOString() } : {}),
    origin: 'paddock',
    bootFailures: Number(row.bootFailures ?? 0),
    ...(row.lastBootFailure ? { lastBootFailure: row.lastBootFailure } : {}),
  };
}

export class ImageCatalog {
  /** Uploads to one name:tag write its record one at a time (lock order: tag, then digest, then the user's quota). */
  private readonly tagQueues = new KeyedQueue();

  constructor(
    private readonly db: Database,
    readonly blobs: BlobStore,
    private readonly limits: ImageLimits,
    /** Whether a live reservation names this image ref. */
    private readonly inUse: (ref: string) => boolean,
    /** The provider pools' images (OpenStack Glance), and the pools that could not be asked. */
    private readonly providers: () => Promise<{ images: ProviderImage[]; errors: { pool: string; message: string }[] }> = async () => ({
      images: [],
      errors: [],
    }),
  ) {}

  /** Per-user limits on stored bytes and uploads at once (api/quotas.ts); none when unset. */
  quotas?: Quotas;

  /** How long an image stream may move no byte. */
  get idleTimeoutMs(): number {
    return this.limits.idleTimeout * 1000;
  }

  /** Told of every upload as it ends, stored (with its size) or refused (with the error): for metrics. */
  onUpload: (upload: { format: string; seconds: number; bytes?: number; error?: unknown }) => void = () => undefined;

  async upload(caller: Caller, request: UploadRequest, body: Readable): Promise<ImageView> {
    const leave = this.quotas?.admit(caller, 'uploads', 0);
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    try {
      if (request.contentLength !== undefined) await this.admitBytes(caller, `${request.name}:${request.tag}`, request.contentLength);
      const image = await this.receive(caller, request, body);
      this.onUpload({ format: image.format, seconds: seconds(), bytes: image.size });
      return image;
    } catch (error) {
      this.onUpload({ format: request.format, seconds: seconds(), error });
      throw error;
    } finally {
      leave?.();
    }
  }

  private async receive(caller: Caller, request: UploadRequest, body: Readable): Promise<ImageView> {
    const name = checkName('name', request.name);
    const tag = checkName('tag', request.tag);
    if (!imageFormats.includes(request.format as ImageFormat)) {
      throw new DomainError('invalid_request', `format is one of ${imageFormats.join(', ')}, not ${JSON.stringify(request.format)}`);
    }
    if (!/^[A-Za-z0-9_.-]{1,32}$/.test(request.arch)) throw new DomainError('invalid_request', `not an architecture: ${JSON.stringify(request.arch)}`);
    const access = request.access ?? 'hook';
    if (!imageAccesses.includes(access as ImageAccess)) {
      throw new DomainError('invalid_request', `access is one of ${imageAccesses.join(', ')}, not ${JSON.stringify(access.slice(0, 40))}`);
    }
    if (access === 'overlay' && request.format !== 'bundle') throw new DomainError('invalid_request', 'access overlay is for boot bundles (format bundle)');
    if (access === 'cloud-init' && request.format === 'bundle') throw new DomainError('invalid_request', 'access cloud-init is for disk images (qcow2 or raw)');
    if (typeof request.expectedSha256 === 'string' && !/^[0-9a-fA-F]{64}$/.test(request.expectedSha256)) {
      throw new DomainError('invalid_request', 'the expected sha256 must be 64 hex digits');
    }
    if (request.expiresInSeconds !== undefined && request.expiresInSeconds > this.limits.maxExpiry) {
      throw new DomainError('invalid_request', `expiry longer than the maximum of ${this.limits.maxExpiry}s`);
    }
    const ref = `${name}:${tag}`;
    const existing = plainRow(await this.db.images.findByPk(ref, { raw: true }));
    if (existing && existing.owner !== caller.name && caller.role !== 'admin') throw forbidden(`image ${ref} belongs to another user`);
    if (request.contentLength !== undefined && request.contentLength > this.limits.maxSize) throw tooLarge(this.limits.maxSize);
    // The upload's disk space is granted before a byte is read (quotas were checked in upload()).
    const grant = await refusals(() => this.blobs.grant(request.contentLength ?? this.limits.maxSize), this.limits.maxSize);
    let blob;
    try {
      blob = await refusals(
        () =>
          this.blobs.receive(body, {
            maxBytes: this.limits.maxSize,
            grant,
            idleTimeoutMs: this.idleTimeoutMs,
            ...(request.expectedSha256 ? { expectedSha256: request.expectedSha256 } : {}),
          }),
        this.limits.maxSize,
      );
    } finally {
      grant.release();
    }
    const now = new Date();
    const row: ImageRow = {
      ref,
      name,
      tag,
      format: request.format,
      arch: request.arch,
      access,
      size: blob.size,
      sha256: blob.sha256,
      owner: caller.name,
      createdAt: now,
      expiresAt: request.expiresInSeconds === undefined ? null : new Date(now.getTime() + request.expiresInSeconds * 1000),
      // New content under the tag: its boot record starts afresh.
      bootFailures: 0,
      lastBootFailure: null,
    };
    // The blob and the record that names it appear together, under the digest's lock; the tag's
    // lock makes `before` the record this upload really replaces, whose blob may now be unused.
    const replaced = await this.tagQueues.run(ref, () =>
      this.blobs.withDigest(blob.sha256, async () => {
        try {
          await blob.place();
        } catch (error) {
          await blob.discard();
          throw error;
        }
        if (request.format === 'bundle') {
          try {
            row.access = await this.bundleAccess(blob.sha256, request.access as ImageAccess | undefined);
          } catch (error) {
            await this.dropIfUnused(blob.sha256);
            throw error;
          }
        }
        const before = plainRow(await this.db.images.findByPk(ref, { raw: true }));
        try {
          await this.recordWithinQuota(caller, row);
        } catch (error) {
          await this.dropIfUnused(blob.sha256);
          throw error;
        }
        return before?.sha256;
      }),
    );
    if (replaced !== undefined && replaced !== blob.sha256) await this.collectBlob(replaced);
    return imageView(row);
  }

  /**
   * A bundle's access, detected from its initrd where it can be: with none given, `hook` when the
   * initrd holds the hook's marker, `overlay` when it holds an SSH server and no marker. `overlay`
   * for an initrd with the hook is refused: its init would replace the overlay's authorized_keys
   * with the (absent) key from the command line, and no login would ever work.
   */
  private async bundleAccess(sha256: string, given: ImageAccess | undefined): Promise<ImageAccess> {
    const detected = await detectBundleAccess(this.blobs.pathOf(sha256), path.join(this.blobs.root, 'incoming'));
    if (given === 'overlay' && detected === 'hook') {
      throw new DomainError(
        'invalid_request',
        "access overlay: this bundle's initrd reads the key from the kernel command line (paddock.authorized_key), which would replace the overlay's; upload it with access hook",
      );
    }
    return given ?? detected ?? 'hook';
  }

  /** Stores the record unless it takes the caller over their stored-bytes quota. Inside withDigest(row.sha256). */
  private async recordWithinQuota(caller: Caller, row: ImageRow): Promise<void> {
    if (!this.quotas) return void (await this.db.images.upsert(row));
    // Count, check and write as one step per user, so parallel uploads cannot all pass.
    await this.quotas.serialize(caller, async () => {
      await this.admitBytes(caller, row.ref, row.size);
      await this.db.images.upsert(row);
    });
  }

  /** Throws `quota_exceeded` if `size` more bytes under `ref` (replacing the caller's own image there) pass the caller's quota. */
  private async admitBytes(caller: Caller, ref: string, size: number): Promise<void> {
    if (this.quotas?.limitsOf(caller)?.imageBytes === undefined) return;
    const account = this.quotas.accountOf(caller.name);
    // The account's own images and those its job runs uploaded with their run tokens.
    const [stored] = await this.db.sequelize.query<{ total: number | null; replaced: number | null }>(
      `SELECT SUM(size) AS total, SUM(CASE WHEN ref = :ref THEN size ELSE 0 END) AS replaced FROM images
       WHERE owner = :account OR owner IN (SELECT id FROM runs WHERE owner = :account)`,
      { replacements: { account, ref }, type: QueryTypes.SELECT },
    );
    this.quotas.admit(caller, 'imageBytes', Number(stored?.total ?? 0) - Number(stored?.replaced ?? 0), size)();
  }

  /** Counts a boot failure against the image (`name` or `name:tag`); unknown refs are ignored. */
  async recordBootFailure(ref: string, reason: string): Promise<void> {
    const full = ref.includes(':') ? ref : `${ref}:latest`;
    await this.db.images.increment('bootFailures', { where: { ref: full } });
    await this.db.images.update({ lastBootFailure: reason.slice(0, 2000) }, { where: { ref: full } });
  }

  async list(): Promise<ImageView[]> {
    return plainRows(
      await this.db.images.findAll({
        order: [
          ['name', 'ASC'],
          ['tag', 'ASC'],
        ],
        raw: true,
      }),
    ).map(imageView);
  }

  /** Paddock's images, then the provider pools' (unless `local`), with the pools that did not answer. */
  async listAll(local: boolean): Promise<{ images: ImageListEntry[]; errors: { pool: string; message: string }[] }> {
    const [own, providers] = await Promise.all([this.list(), local ? { images: [], errors: [] } : this.providers()]);
    return { images: [...own, ...providers.images], errors: providers.errors };
  }

  async get(name: string, tag: string): Promise<ImageRow> {
    const row = plainRow(await this.db.images.findByPk(`${checkName('name', name)}:${checkName('tag', tag)}`, { raw: true }));
    if (!row) throw notFound(`image ${name}:${tag}`);
    return row;
  }

  async remove(caller: Caller, name: string, tag: string): Promise<void> {
    const row = await this.get(name, tag);
    if (row.owner !== caller.name && caller.role !== 'admin') throw forbidden(`image ${row.ref} belongs to another user`);
    if (this.inUse(row.ref)) throw new DomainError('image_in_use', `image ${row.ref} is used by a live reservation`);
    // Only the record as read goes: the same tag uploaded anew meanwhile stays.
    await this.forget({ ref: row.ref, sha256: row.sha256 });
  }

  /** Deletes expired images no live reservation uses, and blobs no image refers to. */
  async collect(now = new Date()): Promise<string[]> {
    const expired = plainRows(await this.db.images.findAll({ where: { expiresAt: { [Op.lt]: now } }, raw: true }));
    const removed: string[] = [];
    for (const row of expired) {
      if (this.inUse(row.ref)) continue;
      if (await this.forget({ ref: row.ref, sha256: row.sha256, expiresAt: { [Op.lt]: now } })) removed.push(row.ref);
    }
    return removed;
  }

  /** Destroys the records `where` says (one digest's), then its blob if no record names it; how many went. */
  private forget(where: WhereOptions<ImageRow> & { sha256: string }): Promise<number> {
    return this.blobs.withDigest(where.sha256, async () => {
      const destroyed = await this.db.images.destroy({ where });
      await this.dropIfUnused(where.sha256);
      return destroyed;
    });
  }

  private collectBlob(sha256: string): Promise<void> {
    return this.blobs.withDigest(sha256, () => this.dropIfUnused(sha256));
  }

  /** Inside withDigest(sha256) only. */
  private async dropIfUnused(sha256: string): Promise<void> {
    if ((await this.db.images.count({ where: { sha256 } })) === 0) await this.blobs.remove(sha256);
  }

  read(row: ImageRow, range?: { start: number; end: number }): Readable {
    return this.blobs.read(row.sha256, range);
  }
}

/** The code a user is told for each of the store's refusals. */
const refusalCodes: Record<Exclude<UploadError['reason'], 'too_large'>, DomainCode> = {
  size_mismatch: 'size_mismatch',
  checksum_mismatch: 'checksum_mismatch',
  no_space: 'insufficient_storage',
  stalled: 'upload_stalled',
  empty: 'empty_upload',
  aborted: 'upload_aborted',
};

/** Runs `step`, turning the store's refusals into domain errors with stable codes. */
async function refusals<T>(step: () => Promise<T>, maxSize: number): Promise<T> {
  try {
    return await step();
  } catch (error) {
    if (!(error instanceof UploadError)) throw error;
    if (error.reason === 'too_large') throw tooLarge(maxSize);
    throw new DomainError(refusalCodes[error.reason] ?? 'upload_aborted', error.message);
  }
}

function tooLarge(limit: number): DomainError {
  return new DomainError('payload_too_large', `the image is larger than the limit of ${limit} bytes`, { limit });
}

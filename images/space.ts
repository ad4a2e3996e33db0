// Free space on the image store's file system, shared out among the uploads in progress.
//
// Contract: an upload is granted space before it reads a byte: what it may write (its declared
// size, or the upload limit when it declares none), rounded up to whole blocks plus one. Grants are
// made one at a time, against what statfs sees free minus what earlier grants may still write
// minus a floor that stays free for everything else on the disk (the SQLite database above all,
// and the logs). While it streams, an upload writes only inside its grant, and stops when the disk
// is fuller than the grants explain (another writer used half of the floor): it then fails as
// `no_space` and removes its partial file. So parallel uploads never share the same free bytes,
// and no upload takes the last bytes the database needs.
import { statfs } from 'node:fs/promises';

export class SpaceRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SpaceRefused';
  }
}

export class DiskSpace {
  /** Bytes granted to running uploads and not written yet. */
  private outstanding = 0;
  /** Grants are decided one at a time (statfs is asynchronous). */
  private deciding: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly dir: string,
    /** Free bytes no upload may take. */
    readonly floor: number,
  ) {}

  private async measure(): Promise<{ free: number; block: number }> {
    const fs = await statfs(this.dir);
    return { free: fs.bavail * fs.bsize, block: fs.bsize };
  }

  /** Grants `bytes` to one upload, or throws SpaceRefused; the grant must be released. */
  grant(bytes: number): Promise<SpaceGrant> {
    const decision = this.deciding.then(async () => {
      const { free, block } = await this.measure();
      const needed = Math.ceil(bytes / block) * block + block;
      const available = free - this.outstanding - this.floor;
      if (needed > available) {
        throw new SpaceRefused(`not enough disk space: ${bytes} bytes asked, ${Math.max(0, available - block)} available`);
      }
      this.outstanding += needed;
      return new SpaceGrant(this, bytes, needed);
    });
    this.deciding = decision.catch(() => undefined);
    return decision;
  }

  /** Throws SpaceRefused when other writers have eaten half of the floor. */
  async check(): Promise<void> {
    const { free } = await this.measure();
    if (free - this.outstanding < this.floor / 2) {
      throw new SpaceRefused(`the disk is filling up: ${free} bytes free, ${this.outstanding} promised to uploads, ${this.floor} kept for the database`);
    }
  }

  /** @internal SpaceGrant's bookkeeping. */
  give(bytes: number): void {
    this.outstanding -= bytes;
  }
}

/** One upload's share: `use` as bytes are written, `release` when done, whatever the outcome. */
export class SpaceGrant {
  private written = 0;
  private released = false;

  constructor(
    private readonly space: DiskSpace,
    /** The most this upload may write. */
    readonly limit: number,
    private held: number,
  ) {}

  /** Counts `bytes` written; false when they go past the grant (the caller stops). */
  use(bytes: number): boolean {
    this.written += bytes;
    if (this.written > this.limit) return false;
    const spent = Math.min(bytes, this.held);
    this.held -= spent;
    this.space.give(spent);
    return true;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.space.give(this.held);
    this.held = 0;
  }
}

/**
 * Store roots: named trees a user added with `cascache store add`. A root keeps its manifest and
 * chunks alive through GC until it is removed. One small JSON file per root, so the files on disk
 * stay the truth and any index can be rebuilt from them:
 *
 * `<root>/v1/roots/<digest>.json` -> `{"digest","name","size","files","created"}`
 *
 * Adding the same tree again keeps one root (the digest is the identity) and updates its name.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic-write';
import { assertDigest, isDigest, type Digest } from './digest';
import { CascacheError, ErrorCodes, toIoError } from './errors';
import { LAYOUT_VERSION } from './store/fs';
import type { StoreObserver } from './store/types';

/** One store root. */
export interface StoreRoot {
  /** Root digest of the tree (its manifest's digest). */
  digest: Digest;
  /** The name given when it was added (not unique; the digest is). */
  name: string;
  /** Logical size: sum of file sizes, bytes. */
  size: number;
  /** Number of regular files. */
  files: number;
  /** When it was first added, ms since the epoch. */
  created: number;
}

const NAME_RE = /^[^\0\n\r]{1,200}$/;

export class RootStore {
  private readonly dir: string;

  /**
   * @param root the store root; roots live under `<root>/v1/roots`.
   * @param observer told about every root added or removed (the store index).
   */
  constructor(
    root: string,
    private readonly observer?: StoreObserver,
  ) {
    this.dir = join(root, LAYOUT_VERSION, 'roots');
  }

  /**
   * Records a root; re-adding a digest keeps its creation time and takes the new name.
   * @throws CascacheError `E_BAD_INPUT` for a malformed digest or name.
   */
  async add(root: Omit<StoreRoot, 'created'> & { created?: number }): Promise<StoreRoot> {
    assertDigest(root.digest, 'root digest');
    if (!NAME_RE.test(root.name)) throw new CascacheError(ErrorCodes.BAD_INPUT, 'a root name is 1-200 characters without NUL or line breaks');
    const existing = await this.get(root.digest);
    const record: StoreRoot = { digest: root.digest, name: root.name, size: root.size, files: root.files, created: existing?.created ?? root.created ?? Date.now() };
    await writeFileAtomic(join(this.dir, `${root.digest}.json`), `${JSON.stringify(record)}\n`);
    this.observer?.rootWritten(record);
    return record;
  }

  /** The root with this digest, or null. A damaged record reads as null. */
  async get(digest: Digest): Promise<StoreRoot | null> {
    assertDigest(digest, 'root digest');
    let text: string;
    try {
      text = await fsp.readFile(join(this.dir, `${digest}.json`), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw toIoError(err, `reading root ${digest}`);
    }
    try {
      const r = JSON.parse(text) as StoreRoot;
      return r.digest === digest && typeof r.name === 'string' && Number.isSafeInteger(r.size) && Number.isSafeInteger(r.files) ? r : null;
    } catch {
      return null;
    }
  }

  /** Every root, newest first. */
  async list(): Promise<StoreRoot[]> {
    let names: string[];
    try {
      names = await fsp.readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw toIoError(err, 'listing roots');
    }
    const roots: StoreRoot[] = [];
    for (const n of names) {
      const d = n.slice(0, -'.json'.length);
      if (!n.endsWith('.json') || !isDigest(d)) continue;
      const r = await this.get(d);
      if (r) roots.push(r);
    }
    return roots.sort((a, b) => b.created - a.created || (a.digest < b.digest ? -1 : 1));
  }

  /** Removes a root (its blobs stay until GC); true when one was removed. */
  async remove(digest: Digest): Promise<boolean> {
    assertDigest(digest, 'root digest');
    try {
      await fsp.unlink(join(this.dir, `${digest}.json`));
      this.observer?.rootRemoved(digest);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw toIoError(err, `removing root ${digest}`);
    }
  }
}

/**
 * Local filesystem storage for action-cache entries:
 * `<root>/v1/ac/<namespace>/<ab>/<key>`, one small JSON file per entry.
 *
 * `putIfAbsent` writes a temp file and hard-links it into place (`link(2)` fails with EEXIST when
 * the name is taken), so exactly one of two racing writers creates the entry and neither can
 * observe a half-written file. `replace` renames over the old file.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, promises as fsp, readSync } from 'node:fs';
import { join } from 'node:path';
import { assertNamespace, MAX_AC_ENTRY_BYTES, type AcStore } from '../action-cache';
import { assertDigest, isDigest, type Digest } from '../digest';
import { toIoError } from '../errors';
import { LAYOUT_VERSION } from './fs';
import type { StoreObserver } from './types';

export class FsAcStore implements AcStore {
  readonly name: string;
  private readonly acDir: string;
  private readonly tmpDir: string;

  /**
   * @param root store root; entries live under `<root>/v1/ac`.
   * @param observer told about every entry written, hit or deleted (the store index).
   */
  constructor(
    readonly root: string,
    private readonly observer?: StoreObserver,
  ) {
    this.name = `fs-ac:${root}`;
    this.acDir = join(root, LAYOUT_VERSION, 'ac');
    this.tmpDir = join(root, LAYOUT_VERSION, 'tmp');
  }

  private pathOf(namespace: string, key: Digest): string {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    return join(this.acDir, namespace, key.slice(0, 2), key);
  }

  /**
   * The entry's bytes, or null. Read synchronously: an entry is a few hundred bytes, and every hit
   * reads one, where a `stat` and a `readFile` on the thread pool cost five round trips through it
   * (open, fstat, read, close after the stat) under load.
   */
  async get(namespace: string, key: Digest): Promise<Buffer | null> {
    const path = this.pathOf(namespace, key);
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw toIoError(err, `reading action-cache entry ${namespace}/${key}`);
    }
    try {
      const size = fstatSync(fd).size;
      // Oversized files are not read whole; the action cache treats them as malformed.
      if (size > MAX_AC_ENTRY_BYTES) return Buffer.alloc(MAX_AC_ENTRY_BYTES + 1);
      const bytes = Buffer.allocUnsafe(size);
      let off = 0;
      for (let n = -1; off < size && n !== 0; off += n) n = readSync(fd, bytes, off, size - off, off);
      return off === size ? bytes : bytes.subarray(0, off);
    } catch (err) {
      throw toIoError(err, `reading action-cache entry ${namespace}/${key}`);
    } finally {
      closeSync(fd);
    }
  }

  async putIfAbsent(namespace: string, key: Digest, bytes: Buffer): Promise<{ created: true } | { created: false; existing: Buffer }> {
    const final = this.pathOf(namespace, key);
    const tmp = await this.writeTemp(bytes);
    try {
      await fsp.mkdir(join(final, '..'), { recursive: true });
      await fsp.link(tmp, final);
      this.observer?.entryWritten(namespace, key, bytes, Date.now());
      return { created: true };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw toIoError(err, `writing action-cache entry ${namespace}/${key}`);
      const existing = await this.get(namespace, key);
      // Deleted between link and read: report it as an empty (malformed) entry; the caller replaces it.
      return { created: false, existing: existing ?? Buffer.alloc(0) };
    } finally {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
    }
  }

  async replace(namespace: string, key: Digest, bytes: Buffer): Promise<void> {
    const final = this.pathOf(namespace, key);
    const tmp = await this.writeTemp(bytes);
    try {
      await fsp.mkdir(join(final, '..'), { recursive: true });
      await fsp.rename(tmp, final);
    } catch (err) {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      throw toIoError(err, `replacing action-cache entry ${namespace}/${key}`);
    }
    this.observer?.entryWritten(namespace, key, bytes, Date.now());
  }

  async delete(namespace: string, key: Digest): Promise<boolean> {
    try {
      await fsp.unlink(this.pathOf(namespace, key));
      this.observer?.entryDeleted(namespace, key);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw toIoError(err, `deleting action-cache entry ${namespace}/${key}`);
    }
  }

  /** Entries with their file mtime as last use: written, or hit (see `touch`). */
  async *list(): AsyncIterable<{ namespace: string; key: Digest; lastUsedMs?: number }> {
    for (const namespace of await readdirOrEmpty(this.acDir)) {
      for (const shard of await readdirOrEmpty(join(this.acDir, namespace))) {
        for (const key of await readdirOrEmpty(join(this.acDir, namespace, shard))) {
          if (!isDigest(key) || !key.startsWith(shard)) continue;
          try {
            yield { namespace, key, lastUsedMs: (await fsp.stat(join(this.acDir, namespace, shard, key))).mtimeMs };
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toIoError(err, `stat of action-cache entry ${key}`);
          }
        }
      }
    }
  }

  /** Sets the entry file's mtime to now: the last-use time LRU eviction reads. */
  async touch(namespace: string, key: Digest): Promise<void> {
    const now = new Date();
    try {
      await fsp.utimes(this.pathOf(namespace, key), now, now);
      this.observer?.entryUsed(namespace, key, now.getTime());
    } catch {
      // Deleted since it was read: nothing to record.
    }
  }

  private async writeTemp(bytes: Buffer): Promise<string> {
    await fsp.mkdir(this.tmpDir, { recursive: true });
    const tmp = join(this.tmpDir, `ac.${randomBytes(8).toString('hex')}`);
    try {
      await fsp.writeFile(tmp, bytes, { flag: 'wx' });
    } catch (err) {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      throw toIoError(err, 'writing action-cache temp file');
    }
    return tmp;
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return (await fsp.readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw toIoError(err, `listing ${dir}`);
  }
}

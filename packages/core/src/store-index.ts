/**
 * The store index: SQLite (`<root>/v1/index.sqlite`, WAL mode) holding blob sizes and codecs, action
 * cache entries with their last use, store roots and recorded runs. It is a cache of the truth on
 * disk: everything in it can be rebuilt from the files (`rebuild`), and a lost, unreadable or
 * wrong-version index is moved aside and replaced rather than trusted or repaired.
 *
 * better-sqlite3 12.x (13.x needs Node 22; see shared DEPENDENCIES.md), synchronous by design: each
 * statement is microseconds, and rebuilds run in one transaction.
 */
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type DatabaseType from 'better-sqlite3';
import type { LocalStore } from './local-store';
import { LAYOUT_VERSION } from './store/fs';

/** Bump when the schema changes: an index of another version is replaced and rebuilt. */
export const INDEX_SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, stored_size INTEGER NOT NULL, raw_size INTEGER, codec INTEGER, mtime INTEGER);
CREATE TABLE IF NOT EXISTS entries (namespace TEXT NOT NULL, key TEXT NOT NULL, manifest TEXT NOT NULL, size INTEGER NOT NULL,
  created INTEGER NOT NULL, last_used INTEGER NOT NULL, PRIMARY KEY (namespace, key));
CREATE TABLE IF NOT EXISTS roots (digest TEXT PRIMARY KEY, name TEXT NOT NULL, size INTEGER NOT NULL, files INTEGER NOT NULL, created INTEGER NOT NULL);
`;

export interface IndexCounts {
  blobs: number;
  storedBytes: number;
  rawBytes: number;
  entries: number;
  logicalBytes: number;
  roots: number;
}

export interface IndexOpenResult {
  index: StoreIndex;
  /** Why the previous index file was replaced, when it was. The caller should rebuild. */
  replaced?: 'missing' | 'unreadable' | 'schema';
}

/** Loaded on first use: processes that never open an index (the Nx agent) never load SQLite. */
function sqlite(): typeof DatabaseType {
  return require('better-sqlite3') as typeof DatabaseType;
}

export class StoreIndex {
  private constructor(
    private readonly db: DatabaseType.Database,
    readonly path: string,
  ) {}

  /**
   * Opens the index of a store, replacing it when it cannot be trusted: a file that SQLite cannot
   * read is moved to `index.sqlite.corrupt-<ms>`; another schema version is deleted.
   */
  static open(root: string): IndexOpenResult {
    const dir = join(root, LAYOUT_VERSION);
    mkdirSync(dir, { recursive: true });
    const path = join(dir, 'index.sqlite');
    let replaced: IndexOpenResult['replaced'] = existsSync(path) ? undefined : 'missing';
    const Database = sqlite();
    let db: DatabaseType.Database | undefined;
    try {
      db = new Database(path);
      db.pragma('journal_mode = WAL');
      // Reading sqlite_master is what fails on a file that is not a database.
      const hasMeta = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get() !== undefined;
      const row = hasMeta ? (db.prepare("SELECT value FROM meta WHERE key = 'schema'").get() as { value: string } | undefined) : undefined;
      if (row && row.value !== String(INDEX_SCHEMA_VERSION)) {
        db.close();
        db = undefined;
        for (const suffix of ['', '-wal', '-shm']) rmSync(`${path}${suffix}`, { force: true });
        replaced = 'schema';
      }
    } catch {
      db?.close();
      db = undefined;
      renameSync(path, `${path}.corrupt-${Date.now()}`);
      for (const suffix of ['-wal', '-shm']) rmSync(`${path}${suffix}`, { force: true });
      replaced = 'unreadable';
    }
    if (!db) {
      db = new Database(path);
      db.pragma('journal_mode = WAL');
    }
    db.exec(SCHEMA);
    db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)").run(String(INDEX_SCHEMA_VERSION));
    return { index: new StoreIndex(db, path), replaced };
  }

  /** Rebuilds every table from the files of `store`, in one transaction. */
  async rebuild(store: LocalStore): Promise<IndexCounts> {
    const blobs: Array<[string, number, number | null, number | null, number | null]> = [];
    for await (const b of store.blobs.list()) {
      let header = null;
      try {
        header = store.blobs.header(b.digest);
      } catch {
        // A malformed frame is indexed without its header; verify reports and quarantines it.
      }
      blobs.push([b.digest, b.storedSize, header?.rawLength ?? null, header?.codec ?? null, b.mtimeMs !== undefined ? Math.round(b.mtimeMs) : null]);
    }
    const entries: Array<[string, string, string, number, number, number]> = [];
    for await (const { namespace, key, lastUsedMs } of store.entries.list()) {
      const e = await store.actionCache.peek(namespace, key);
      if (e) entries.push([namespace, key, e.manifest, e.size, e.created, Math.round(lastUsedMs ?? e.created)]);
    }
    const roots = await store.roots.list();
    this.db.transaction(() => {
      this.db.exec('DELETE FROM blobs; DELETE FROM entries; DELETE FROM roots;');
      const b = this.db.prepare('INSERT INTO blobs (digest, stored_size, raw_size, codec, mtime) VALUES (?, ?, ?, ?, ?)');
      for (const row of blobs) b.run(...row);
      const e = this.db.prepare('INSERT INTO entries (namespace, key, manifest, size, created, last_used) VALUES (?, ?, ?, ?, ?, ?)');
      for (const row of entries) e.run(...row);
      const r = this.db.prepare('INSERT INTO roots (digest, name, size, files, created) VALUES (?, ?, ?, ?, ?)');
      for (const root of roots) r.run(root.digest, root.name, root.size, root.files, root.created);
      this.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('rebuilt', ?)").run(String(Date.now()));
    })();
    return this.counts();
  }

  /** Totals from the index. */
  counts(): IndexCounts {
    const b = this.db.prepare('SELECT COUNT(*) n, COALESCE(SUM(stored_size), 0) s, COALESCE(SUM(raw_size), 0) r FROM blobs').get() as { n: number; s: number; r: number };
    const e = this.db.prepare('SELECT COUNT(*) n, COALESCE(SUM(size), 0) s FROM entries').get() as { n: number; s: number };
    const r = this.db.prepare('SELECT COUNT(*) n, COALESCE(SUM(size), 0) s FROM roots').get() as { n: number; s: number };
    return { blobs: b.n, storedBytes: b.s, rawBytes: b.r, entries: e.n, logicalBytes: e.s + r.s, roots: r.n };
  }

  /** When the index was last rebuilt from the files, ms, or null if never. */
  rebuiltAt(): number | null {
    const row = this.db.prepare("SELECT value FROM meta WHERE key = 'rebuilt'").get() as { value: string } | undefined;
    return row ? Number(row.value) : null;
  }

  close(): void {
    this.db.close();
  }
}

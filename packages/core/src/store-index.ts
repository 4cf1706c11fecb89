/**
 * The store index: SQLite (`<root>/v1/index.sqlite`, WAL mode) holding blob sizes and codecs, action
 * cache entries with their last use, store roots and recorded tool runs. It is a cache of the truth on
 * disk: everything in it can be rebuilt from the files (`rebuild`), and a lost, unreadable or
 * wrong-version index is moved aside and replaced rather than trusted or repaired.
 *
 * Kept current incrementally: the local store tells it (as a {@link StoreObserver}) about every blob,
 * entry and root it writes, hits or deletes, after the file change. Updates are queued and written in
 * one transaction at most 50 ms later (`flush`; `close` flushes too), so a burst of chunk writes
 * costs one commit rather than one each (measured: +22% on a cold ingest with a commit per event-loop
 * turn, +2..7% batched; bench/index.mjs).
 *
 * When it can fall behind, it says so instead of drifting silently: a failed update (a locked or full
 * database) or a write by a process without the index leaves `<root>/v1/index.stale`; a process that
 * queued updates registers itself in the `writers` table until it closes the index, so one that died
 * with updates unwritten is found by its dead pid; and an index never rebuilt since it was created is
 * incomplete. Readers call `refresh`, which rebuilds in those cases. A rebuild runs beside writers: it deletes only rows it did not see that were indexed before
 * its scan began, so a write that lands during the scan keeps its row.
 *
 * Tool runs (`<root>/v1/runs/*.json`, one file per run, written once) are read into the index by
 * `refresh` when new files appear.
 *
 * libsql (SQLite with prebuilt binaries per platform, better-sqlite3's API, no install script; see
 * docs/decisions.md), synchronous by design: each statement is microseconds. Unlike better-sqlite3,
 * a statement that failed (a lock held past the busy timeout, a full disk) stays in progress and makes
 * every later commit on its connection fail, so every write goes through `write`, which reconnects
 * after a failure. `synchronous = NORMAL`: a power cut may lose the last commits, which costs a
 * rebuild at worst, never a blob.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, promises as fsp, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type DatabaseType from 'libsql';
import { describeAcEntry } from './action-cache';
import type { Digest } from './digest';
import { CascacheError, ErrorCodes } from './errors';
import type { LocalStore } from './local-store';
import { LAYOUT_VERSION } from './store/fs';
import type { StoreObserver } from './store/types';

/** Bump when the schema changes: an index of another version is replaced and rebuilt. */
export const INDEX_SCHEMA_VERSION = 2;

/** How long an update waits for another process's write lock before the index is marked stale, ms. */
const BUSY_TIMEOUT_MS = 2000;
/** Longest an update waits in the queue, ms, and the queue length that flushes at once. */
const FLUSH_DELAY_MS = 50;
const FLUSH_AT_OPS = 2000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, stored_size INTEGER NOT NULL, raw_size INTEGER, codec INTEGER,
  mtime INTEGER, indexed INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (namespace TEXT NOT NULL, key TEXT NOT NULL, manifest TEXT NOT NULL, size INTEGER NOT NULL,
  created INTEGER NOT NULL, last_used INTEGER NOT NULL, indexed INTEGER NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roots (digest TEXT PRIMARY KEY, name TEXT NOT NULL, size INTEGER NOT NULL, files INTEGER NOT NULL,
  created INTEGER NOT NULL, indexed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS writers (id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (file TEXT PRIMARY KEY, tool TEXT NOT NULL, started INTEGER NOT NULL, ended INTEGER);
CREATE TABLE IF NOT EXISTS tasks (run TEXT NOT NULL, started INTEGER NOT NULL, id TEXT, hash TEXT, status TEXT NOT NULL, ms INTEGER);
CREATE INDEX IF NOT EXISTS tasks_hash ON tasks (hash);
CREATE INDEX IF NOT EXISTS tasks_run ON tasks (run);
`;

/** Per connection: what a rebuild saw (see `rebuildOnce`). */
const TEMP_SCHEMA = `
CREATE TEMP TABLE IF NOT EXISTS seen_blobs (digest TEXT PRIMARY KEY);
CREATE TEMP TABLE IF NOT EXISTS seen_entries (namespace TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (namespace, key));
CREATE TEMP TABLE IF NOT EXISTS seen_roots (digest TEXT PRIMARY KEY);
`;

/**
 * Task statuses that count as a hit (served by cascache), a local hit (served by the tool's own
 * cache: Nx's `local-cache`) and a miss (looked up, then built), per tool: Nx's own task statuses
 * (`remote-cache` is ours) and the CLI's `hit`/`miss`. A task the tool does not cache (a record's
 * `cache: false`) is indexed as `uncacheable`: neither, since no cache could have served it.
 */
const HIT_STATUSES = ['remote-cache', 'hit'];
const LOCAL_HIT_STATUSES = ['local-cache', 'local-cache-kept-existing'];
const MISS_STATUSES = ['success', 'failure', 'miss'];
const UNCACHEABLE = 'uncacheable';
const inList = (xs: string[]): string => xs.map((x) => `'${x}'`).join(', ');
/** Share of lookups that did not build, 0..1 to three decimals; 0 when nothing was looked up. */
const hitRate = (hits: number, misses: number): number => (hits + misses > 0 ? Math.round((hits / (hits + misses)) * 1000) / 1000 : 0);
/** Per hash, the duration of its last successful real run, ms: what a later hit of it saved. */
const LAST_BUILD = "(SELECT hash, ms, MAX(started) FROM tasks WHERE status = 'success' AND ms IS NOT NULL AND hash IS NOT NULL GROUP BY hash)";

export interface IndexCounts {
  blobs: number;
  storedBytes: number;
  rawBytes: number;
  entries: number;
  logicalBytes: number;
  roots: number;
}

/** What one tool got from the cache, from its recorded runs. */
export interface ToolStats {
  tool: string;
  runs: number;
  /** Tasks served from cascache. */
  hits: number;
  /** Tasks served by the tool's own local cache (Nx's `.nx/cache`), before asking cascache. */
  localHits: number;
  /** Cacheable tasks looked up and then built (or failed). Uncacheable tasks are not counted. */
  misses: number;
  /** (hits + localHits) / (hits + localHits + misses), 0..1: how often a cacheable task was not built. */
  hitRate: number;
  /** For each hit, the duration of the last successful real run of the same hash, summed, ms. Null when the tool records no durations. */
  savedMs: number | null;
}

/** A task that missed often (see {@link StoreIndex.topMisses}). */
export interface TaskMisses {
  tool: string;
  /** The tool's task id, e.g. `app-web:build`. */
  task: string;
  misses: number;
  /** Times it was looked up at all (hits, local hits and misses). */
  lookups: number;
  /** ms since the epoch of its last miss. */
  lastMiss: number;
}

/** One recorded run as the index summarises it (see {@link StoreIndex.recentRuns}). */
export interface RunSummary {
  tool: string;
  /** ms since the epoch. */
  startTime: number;
  /** Wall time of the whole run, ms, when recorded. */
  durationMs: number | null;
  tasks: number;
  hits: number;
  localHits: number;
  misses: number;
  /** As in {@link ToolStats.savedMs}, for this run's hits. */
  savedMs: number | null;
}

/** One recorded run of a tool: `<root>/v1/runs/<name>.json`. Written once, never changed. */
export interface RunRecord {
  /** `nx`, `cascache cache`, ... */
  tool: string;
  id?: string;
  /** ms since the epoch. */
  startTime: number;
  endTime?: number;
  /**
   * Per task: its hash (action key), what happened (`remote-cache`, `success`, `hit`, `miss`...),
   * how long it took, ms, and `cache: false` when the tool does not cache it (Nx's `task.cache`).
   */
  tasks: Array<{ id?: string; hash?: string; status: string; ms?: number; cache?: boolean }>;
}

export interface IndexOpenResult {
  index: StoreIndex;
  /** Why the previous index file was replaced, when it was. The caller should rebuild. */
  replaced?: 'missing' | 'unreadable' | 'schema';
}

/** Loaded on first use, so processes that never open an index never load SQLite. */
function sqlite(): typeof DatabaseType {
  return require('libsql') as typeof DatabaseType;
}

/** Path of the marker that says the index fell behind the files. */
export function staleMarkerPath(root: string): string {
  return join(root, LAYOUT_VERSION, 'index.stale');
}

/**
 * Records that the index of the store at `root` no longer matches its files (best-effort: if even
 * this fails, the next rebuild still starts from the files).
 */
export function markIndexStale(root: string, reason: string): void {
  try {
    writeFileSync(staleMarkerPath(root), `${new Date().toISOString()} ${reason}\n`);
  } catch {
    /* see above */
  }
}

/**
 * Writes a run record under `<root>/v1/runs/` (atomically, never overwriting) and returns its file
 * name. The index reads it at its next `refresh`.
 * @throws Error from the filesystem; callers recording statistics should not let it fail their work.
 */
export async function recordRun(root: string, run: RunRecord): Promise<string> {
  const dir = join(root, LAYOUT_VERSION, 'runs');
  await fsp.mkdir(dir, { recursive: true });
  const name = `${run.startTime}-${randomBytes(4).toString('hex')}.json`;
  const tmp = join(dir, `.${name}.tmp`);
  await fsp.writeFile(tmp, `${JSON.stringify(run)}\n`, { flag: 'wx' });
  await fsp.rename(tmp, join(dir, name));
  return name;
}

type Statement = DatabaseType.Statement;

/** SQLite's answers for a file that is not a database, or a damaged one. Anything else (a lock) is not corruption. */
const CORRUPT_CODES = new Set(['SQLITE_NOTADB', 'SQLITE_CORRUPT']);

export class StoreIndex implements StoreObserver {
  private readonly queue: Array<() => void> = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** This process's row in `writers`, once it has queued an update. */
  private writerId: string | null = null;
  private db!: DatabaseType.Database;
  private st!: Record<'blobPut' | 'blobDel' | 'entryPut' | 'entryUse' | 'entryDel' | 'rootPut' | 'rootDel', Statement>;
  /** Inode of the file the connection writes, to notice when another process replaces it. */
  private ino: number | null = null;

  private constructor(
    db: DatabaseType.Database,
    readonly path: string,
    /** The store root this index describes. */
    readonly root: string,
    /** Why the index file was replaced at open, if it was. */
    readonly replaced: IndexOpenResult['replaced'],
    private readonly busyTimeoutMs: number | undefined,
  ) {
    this.attach(db);
  }

  private attach(db: DatabaseType.Database): void {
    this.db = db;
    this.ino = inodeOf(this.path);
    this.st = {
      blobPut: db.prepare(
        `INSERT INTO blobs (digest, stored_size, raw_size, codec, mtime, indexed) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (digest) DO UPDATE SET stored_size = excluded.stored_size, raw_size = excluded.raw_size, codec = excluded.codec,
           mtime = excluded.mtime, indexed = excluded.indexed`,
      ),
      blobDel: db.prepare('DELETE FROM blobs WHERE digest = ?'),
      entryPut: db.prepare(
        `INSERT INTO entries (namespace, key, manifest, size, created, last_used, indexed) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (namespace, key) DO UPDATE SET manifest = excluded.manifest, size = excluded.size, created = excluded.created,
           last_used = MAX(entries.last_used, excluded.last_used), indexed = excluded.indexed`,
      ),
      entryUse: db.prepare('UPDATE entries SET last_used = MAX(last_used, ?) WHERE namespace = ? AND key = ?'),
      entryDel: db.prepare('DELETE FROM entries WHERE namespace = ? AND key = ?'),
      rootPut: db.prepare(
        `INSERT INTO roots (digest, name, size, files, created, indexed) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (digest) DO UPDATE SET name = excluded.name, size = excluded.size, files = excluded.files, created = excluded.created,
           indexed = excluded.indexed`,
      ),
      rootDel: db.prepare('DELETE FROM roots WHERE digest = ?'),
    };
  }

  /**
   * Opens the index of a store, replacing it when it cannot be trusted: a file SQLite reports as not
   * a database or corrupt is moved to `index.sqlite.corrupt-<ms>`; another schema version is
   * deleted. A replaced index is empty and incomplete until rebuilt (`refresh` does that).
   * `busyTimeoutMs`: how long an update waits for another process's write lock (default 2000)
   * before the index is marked stale.
   * @throws Error when SQLite cannot be loaded, the file cannot be opened, or it stays locked.
   */
  static open(root: string, options: { busyTimeoutMs?: number } = {}): IndexOpenResult {
    const { db, path, replaced } = StoreIndex.connectChecked(root, options.busyTimeoutMs);
    return { index: new StoreIndex(db, path, root, replaced, options.busyTimeoutMs), replaced };
  }

  private static connectChecked(root: string, busyTimeoutMs: number | undefined): { db: DatabaseType.Database; path: string; replaced: IndexOpenResult['replaced'] } {
    const dir = join(root, LAYOUT_VERSION);
    mkdirSync(dir, { recursive: true });
    const path = join(dir, 'index.sqlite');
    let replaced: IndexOpenResult['replaced'] = existsSync(path) ? undefined : 'missing';
    const Database = sqlite();
    let db: DatabaseType.Database | undefined;
    try {
      db = StoreIndex.connect(Database, path, busyTimeoutMs);
      // Reading sqlite_master is what fails on a file that is not a database.
      const hasMeta = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get() !== undefined;
      const row = hasMeta ? (db.prepare("SELECT value FROM meta WHERE key = 'schema'").get() as { value: string } | undefined) : undefined;
      if (row && row.value !== String(INDEX_SCHEMA_VERSION)) {
        db.close();
        db = undefined;
        for (const suffix of ['', '-wal', '-shm']) rmSync(`${path}${suffix}`, { force: true });
        replaced = 'schema';
      }
    } catch (err) {
      db?.close();
      if (!CORRUPT_CODES.has((err as { code?: string }).code ?? '')) throw err;
      db = undefined;
      renameSync(path, `${path}.corrupt-${Date.now()}`);
      for (const suffix of ['-wal', '-shm']) rmSync(`${path}${suffix}`, { force: true });
      replaced = 'unreadable';
    }
    db ??= StoreIndex.connect(Database, path, busyTimeoutMs);
    db.exec(SCHEMA);
    db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)").run(String(INDEX_SCHEMA_VERSION));
    return { db, path, replaced };
  }

  private static connect(Database: typeof DatabaseType, path: string, busyTimeoutMs = BUSY_TIMEOUT_MS): DatabaseType.Database {
    const db = new Database(path, { timeout: busyTimeoutMs });
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec(TEMP_SCHEMA);
    return db;
  }

  /**
   * Runs one write. When it throws, the connection is replaced before the error goes on: with libsql a
   * failed statement stays in progress and would fail every later commit on this connection.
   */
  private write<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      try {
        this.db.close();
      } catch {
        /* already unusable */
      }
      try {
        this.attach(StoreIndex.connect(sqlite(), this.path, this.busyTimeoutMs));
      } catch {
        /* left closed: later writes fail, and their callers mark the index stale */
      }
      throw err;
    }
  }

  /**
   * Runs `fn` in one transaction through `write`. A failure rethrows `fn`'s own error: SQLite may
   * already have rolled back (a full disk), and libsql's wrapper would then report its failed
   * ROLLBACK instead.
   */
  private transaction(fn: () => void): void {
    this.write(() => {
      this.db.exec('BEGIN');
      try {
        fn();
        this.db.exec('COMMIT');
      } catch (err) {
        if (this.db.inTransaction) {
          try {
            this.db.exec('ROLLBACK');
          } catch {
            /* the connection is replaced next */
          }
        }
        throw err;
      }
    });
  }

  /**
   * When another process moved the index file aside (corrupt) or replaced it (another schema), this
   * connection writes to a file nobody reads: reconnect to the current one and mark it stale, since
   * the updates written meanwhile are not in it. When the file is gone and nothing replaced it yet,
   * nothing is recreated here (the whole store may be being deleted): the updates are dropped and,
   * if the store is still there, the index is marked stale.
   * @returns false when the queued updates have nowhere to go.
   */
  private followFile(): boolean {
    const ino = inodeOf(this.path);
    if (ino === this.ino) return true;
    if (ino === null) {
      if (existsSync(join(this.root, LAYOUT_VERSION, 'store.json'))) markIndexStale(this.root, 'the index file was deleted while this process was writing to it');
      return false;
    }
    markIndexStale(this.root, 'the index file was replaced while this process was writing to it');
    try {
      this.db.close();
    } catch {
      /* already unusable */
    }
    this.attach(StoreIndex.connectChecked(this.root, this.busyTimeoutMs).db);
    this.writerId = null;
    return true;
  }

  // --- StoreObserver: queued, written by flush() ---

  blobWritten(b: { digest: Digest; storedSize: number; rawSize: number; codec: number; mtimeMs: number }): void {
    this.enqueue(() => this.st.blobPut.run(b.digest, b.storedSize, b.rawSize, b.codec, Math.round(b.mtimeMs), Date.now()));
  }

  blobDeleted(digest: Digest): void {
    this.enqueue(() => this.st.blobDel.run(digest));
  }

  entryWritten(namespace: string, key: Digest, bytes: Buffer, atMs: number): void {
    const e = describeAcEntry(bytes, namespace, key);
    // A malformed entry is no entry: it is never served, and a rebuild would not count it either.
    this.enqueue(() => (e ? this.st.entryPut.run(namespace, key, e.manifest, e.size, e.created, Math.round(atMs), Date.now()) : this.st.entryDel.run(namespace, key)));
  }

  entryUsed(namespace: string, key: Digest, atMs: number): void {
    this.enqueue(() => this.st.entryUse.run(Math.round(atMs), namespace, key));
  }

  entryDeleted(namespace: string, key: Digest): void {
    this.enqueue(() => this.st.entryDel.run(namespace, key));
  }

  rootWritten(r: { digest: Digest; name: string; size: number; files: number; created: number }): void {
    this.enqueue(() => this.st.rootPut.run(r.digest, r.name, r.size, r.files, r.created, Date.now()));
  }

  rootRemoved(digest: Digest): void {
    this.enqueue(() => this.st.rootDel.run(digest));
  }

  private enqueue(op: () => void): void {
    if (this.closed) {
      markIndexStale(this.root, 'a write after the index was closed');
      return;
    }
    if (!this.writerId) this.register();
    this.queue.push(op);
    if (this.queue.length >= FLUSH_AT_OPS) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), FLUSH_DELAY_MS);
  }

  /** Records this process as a writer before its first queued update (see `staleReason`). */
  private register(): void {
    const id = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
    try {
      this.write(() => this.db.prepare('INSERT INTO writers (id, host, pid, since) VALUES (?, ?, ?, ?)').run(id, hostname(), process.pid, Date.now()));
    } catch (err) {
      markIndexStale(this.root, `registering a writer failed: ${(err as Error).message}`);
    }
    this.writerId = id;
  }

  /**
   * Writes queued updates in one transaction. Never throws: when the write fails (another process
   * holds the lock past the busy timeout, a full disk), the updates are dropped and the index is
   * marked stale, so the next `refresh` rebuilds it from the files.
   */
  flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.closed) return;
    let writable: boolean;
    try {
      writable = this.followFile();
    } catch (err) {
      markIndexStale(this.root, `reopening the index failed: ${(err as Error).message}`);
      writable = false;
    }
    if (!writable) {
      this.queue.length = 0;
      return;
    }
    if (this.queue.length === 0) return;
    const ops = this.queue.splice(0);
    try {
      if (!this.writerId) this.register();
      this.transaction(() => {
        for (const op of ops) op();
      });
    } catch (err) {
      markIndexStale(this.root, `an update failed: ${(err as Error).message}`);
    }
  }

  // --- Freshness and rebuild ---

  /** Why the index cannot be trusted as complete right now, or null when it can. */
  staleReason(): string | null {
    if (this.rebuiltAt() === null) return this.replaced === 'unreadable' ? 'it was unreadable and was replaced' : 'it was never built';
    try {
      return `it fell behind the files (${readFileSync(staleMarkerPath(this.root), 'utf8').trim()})`;
    } catch {
      /* no marker */
    }
    const dead = this.deadWriters();
    return dead.length > 0 ? `a process that was updating it (pid ${dead[0]!.pid}) ended without closing it` : null;
  }

  /** Registered writers on this host whose process is gone (their last queued updates may be lost). */
  private deadWriters(): Array<{ id: string; pid: number }> {
    const rows = this.db.prepare('SELECT id, pid FROM writers WHERE host = ?').all(hostname()) as Array<{ id: string; pid: number }>;
    return rows.filter((w) => w.id !== this.writerId && !processAlive(w.pid));
  }

  /**
   * Makes the index current for reading: rebuilds it when it is incomplete or marked stale, and
   * reads run records that appeared since the last refresh.
   * @returns why it was rebuilt, or null when it was current.
   */
  async refresh(store: LocalStore): Promise<string | null> {
    this.flush(); // also reconnects if another process replaced the file
    const reason = this.staleReason();
    if (reason) await this.rebuild(store);
    else await this.syncRuns();
    return reason;
  }

  /**
   * Rebuilds every table from the files of `store`, beside concurrent writers: rows the scan did not
   * see are deleted only when they were indexed before the scan began. Clears the stale marker first,
   * so an update that fails during the rebuild marks the index stale again.
   * @returns the totals afterwards.
   * @throws CascacheError `E_IO` when SQLite cannot write (a full disk: "database or disk is full");
   *   the index is then left as it was and marked stale, and the store's files are untouched.
   */
  async rebuild(store: LocalStore): Promise<IndexCounts> {
    try {
      return await this.rebuildOnce(store);
    } catch (err) {
      if (err instanceof CascacheError) throw err;
      markIndexStale(this.root, 'a rebuild failed');
      throw new CascacheError(ErrorCodes.IO, `could not rebuild the store index: ${(err as Error).message}`, { cause: err });
    }
  }

  private async rebuildOnce(store: LocalStore): Promise<IndexCounts> {
    this.flush();
    const start = Date.now();
    rmSync(staleMarkerPath(this.root), { force: true });
    const dead = this.deadWriters();
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
      const bytes = await store.entries.get(namespace, key);
      const e = bytes && describeAcEntry(bytes, namespace, key);
      if (e) entries.push([namespace, key, e.manifest, e.size, e.created, Math.round(lastUsedMs ?? e.created)]);
    }
    const roots = await store.roots.list();
    const now = Date.now();
    this.transaction(() => {
      this.db.exec('DELETE FROM seen_blobs; DELETE FROM seen_entries; DELETE FROM seen_roots;');
      const seenBlob = this.db.prepare('INSERT OR IGNORE INTO seen_blobs (digest) VALUES (?)');
      for (const row of blobs) {
        seenBlob.run(row[0]);
        this.st.blobPut.run(...row, now);
      }
      const seenEntry = this.db.prepare('INSERT OR IGNORE INTO seen_entries (namespace, key) VALUES (?, ?)');
      for (const row of entries) {
        seenEntry.run(row[0], row[1]);
        this.st.entryPut.run(...row, now);
      }
      const seenRoot = this.db.prepare('INSERT OR IGNORE INTO seen_roots (digest) VALUES (?)');
      for (const r of roots) {
        seenRoot.run(r.digest);
        this.st.rootPut.run(r.digest, r.name, r.size, r.files, r.created, now);
      }
      this.db.prepare('DELETE FROM blobs WHERE indexed < ? AND digest NOT IN (SELECT digest FROM seen_blobs)').run(start);
      this.db.prepare('DELETE FROM entries WHERE indexed < ? AND (namespace, key) NOT IN (SELECT namespace, key FROM seen_entries)').run(start);
      this.db.prepare('DELETE FROM roots WHERE indexed < ? AND digest NOT IN (SELECT digest FROM seen_roots)').run(start);
      this.db.exec('DELETE FROM runs; DELETE FROM tasks; DELETE FROM seen_blobs; DELETE FROM seen_entries; DELETE FROM seen_roots;');
      const forget = this.db.prepare('DELETE FROM writers WHERE id = ?');
      for (const w of dead) forget.run(w.id);
      this.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('rebuilt', ?)").run(String(now));
    });
    await this.syncRuns();
    return this.counts();
  }

  /**
   * Reads run records the index has not seen yet (`<root>/v1/runs/*.json`). A record that cannot be
   * parsed is skipped and not retried (run files are written once, atomically).
   */
  async syncRuns(): Promise<number> {
    const dir = join(this.root, LAYOUT_VERSION, 'runs');
    let names: string[];
    try {
      names = (await fsp.readdir(dir)).filter((n) => n.endsWith('.json') && !n.startsWith('.'));
    } catch {
      return 0;
    }
    const known = new Set((this.db.prepare('SELECT file FROM runs').all() as Array<{ file: string }>).map((r) => r.file));
    const fresh: Array<{ file: string; run: RunRecord | null }> = [];
    for (const file of names) {
      if (known.has(file)) continue;
      let run: RunRecord | null = null;
      try {
        const r = JSON.parse(await fsp.readFile(join(dir, file), 'utf8')) as Partial<RunRecord>;
        if (typeof r.tool === 'string' && Array.isArray(r.tasks)) run = { tool: r.tool, startTime: Number(r.startTime) || 0, endTime: r.endTime, tasks: r.tasks };
      } catch {
        /* unreadable: recorded as an empty run of tool '?' so it is not read again */
      }
      fresh.push({ file, run });
    }
    if (fresh.length === 0) return 0;
    const insertRun = this.db.prepare('INSERT OR IGNORE INTO runs (file, tool, started, ended) VALUES (?, ?, ?, ?)');
    const insertTask = this.db.prepare('INSERT INTO tasks (run, started, id, hash, status, ms) VALUES (?, ?, ?, ?, ?, ?)');
    const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
    const int = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? Math.round(v) : null);
    this.transaction(() => {
      for (const { file, run } of fresh) {
        // Another process may have read the same file first: its rows stand.
        if (insertRun.run(file, run?.tool ?? '?', run?.startTime ?? 0, int(run?.endTime)).changes === 0 || !run) continue;
        for (const t of run.tasks) {
          if (t && typeof t.status === 'string') insertTask.run(file, run.startTime, str(t.id), str(t.hash), t.cache === false ? UNCACHEABLE : t.status, int(t.ms));
        }
      }
    });
    return fresh.length;
  }

  // --- Queries ---

  /** Totals from the index. */
  counts(): IndexCounts {
    this.flush();
    const b = this.db.prepare('SELECT COUNT(*) n, COALESCE(SUM(stored_size), 0) s, COALESCE(SUM(raw_size), 0) r FROM blobs').get() as { n: number; s: number; r: number };
    const e = this.db.prepare('SELECT COUNT(*) n, COALESCE(SUM(size), 0) s FROM entries').get() as { n: number; s: number };
    const r = this.db.prepare('SELECT COUNT(*) n, COALESCE(SUM(size), 0) s FROM roots').get() as { n: number; s: number };
    return { blobs: b.n, storedBytes: b.s, rawBytes: b.r, entries: e.n, logicalBytes: e.s + r.s, roots: r.n };
  }

  /** Per tool, from the recorded runs (call `refresh` first to include new ones), by tool name. */
  toolStats(): ToolStats[] {
    const rows = this.db
      .prepare(
        `SELECT r.tool tool, COUNT(DISTINCT r.file) runs,
           COALESCE(SUM(t.status IN (${inList(HIT_STATUSES)})), 0) hits,
           COALESCE(SUM(t.status IN (${inList(LOCAL_HIT_STATUSES)})), 0) localHits,
           COALESCE(SUM(t.status IN (${inList(MISS_STATUSES)})), 0) misses,
           COUNT(t.ms) timed
         FROM runs r LEFT JOIN tasks t ON t.run = r.file WHERE r.tool != '?' GROUP BY r.tool ORDER BY r.tool`,
      )
      .all() as Array<{ tool: string; runs: number; hits: number; localHits: number; misses: number; timed: number }>;
    // What a hit saved: the duration of the last successful real run of the same hash.
    const saved = this.db
      .prepare(
        `SELECT r.tool tool, COALESCE(SUM(b.ms), 0) ms
         FROM tasks t JOIN runs r ON r.file = t.run
         JOIN ${LAST_BUILD} b ON b.hash = t.hash
         WHERE t.status IN (${inList(HIT_STATUSES)}) GROUP BY r.tool`,
      )
      .all() as Array<{ tool: string; ms: number }>;
    const savedBy = new Map(saved.map((s) => [s.tool, s.ms]));
    return rows.map((r) => ({
      tool: r.tool,
      runs: r.runs,
      hits: r.hits,
      localHits: r.localHits,
      misses: r.misses,
      hitRate: hitRate(r.hits + r.localHits, r.misses),
      savedMs: r.timed > 0 ? (savedBy.get(r.tool) ?? 0) : null,
    }));
  }

  /** The tasks (by tool and task id) that missed most across recorded runs, most first; ties by the latest miss. */
  topMisses(limit: number): TaskMisses[] {
    return this.db
      .prepare(
        `SELECT r.tool tool, t.id task,
           SUM(t.status IN (${inList(MISS_STATUSES)})) misses,
           SUM(t.status IN (${inList([...HIT_STATUSES, ...LOCAL_HIT_STATUSES, ...MISS_STATUSES])})) lookups,
           MAX(CASE WHEN t.status IN (${inList(MISS_STATUSES)}) THEN t.started END) lastMiss
         FROM tasks t JOIN runs r ON r.file = t.run WHERE t.id IS NOT NULL AND r.tool != '?'
         GROUP BY r.tool, t.id HAVING misses > 0 ORDER BY misses DESC, lastMiss DESC, task LIMIT ?`,
      )
      .all(limit) as TaskMisses[];
  }

  /** The `limit` most recent runs, newest first. */
  recentRuns(limit: number): RunSummary[] {
    const rows = this.db
      .prepare(
        `SELECT r.tool tool, r.started startTime, r.ended ended, COUNT(t.status) tasks,
           COALESCE(SUM(t.status IN (${inList(HIT_STATUSES)})), 0) hits,
           COALESCE(SUM(t.status IN (${inList(LOCAL_HIT_STATUSES)})), 0) localHits,
           COALESCE(SUM(t.status IN (${inList(MISS_STATUSES)})), 0) misses,
           COUNT(t.ms) timed,
           (SELECT SUM(b.ms) FROM tasks h
              JOIN ${LAST_BUILD} b ON b.hash = h.hash
              WHERE h.run = r.file AND h.status IN (${inList(HIT_STATUSES)})) saved
         FROM runs r LEFT JOIN tasks t ON t.run = r.file WHERE r.tool != '?'
         GROUP BY r.file ORDER BY r.started DESC, r.file DESC LIMIT ?`,
      )
      .all(limit) as Array<{ tool: string; startTime: number; ended: number | null; tasks: number; hits: number; localHits: number; misses: number; timed: number; saved: number | null }>;
    return rows.map((r) => ({
      tool: r.tool,
      startTime: r.startTime,
      durationMs: r.ended !== null && r.ended >= r.startTime ? r.ended - r.startTime : null,
      tasks: r.tasks,
      hits: r.hits,
      localHits: r.localHits,
      misses: r.misses,
      savedMs: r.timed > 0 ? (r.saved ?? 0) : null,
    }));
  }

  /** The last hit of each hash recorded by `tool`, ms since the epoch. */
  lastHits(tool: string): Map<string, number> {
    const rows = this.db
      .prepare(`SELECT t.hash hash, MAX(t.started) at FROM tasks t JOIN runs r ON r.file = t.run WHERE r.tool = ? AND t.hash IS NOT NULL AND t.status IN (${inList(HIT_STATUSES)}) GROUP BY t.hash`)
      .all(tool) as Array<{ hash: string; at: number }>;
    return new Map(rows.map((r) => [r.hash, r.at]));
  }

  /** Records that the index is complete as it stands (a store created empty just now). */
  markBuilt(): void {
    this.write(() => this.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('rebuilt', ?)").run(String(Date.now())));
  }

  /** When the index was last rebuilt from the files, ms, or null if never. */
  rebuiltAt(): number | null {
    const row = this.db.prepare("SELECT value FROM meta WHERE key = 'rebuilt'").get() as { value: string } | undefined;
    return row ? Number(row.value) : null;
  }

  /** Writes what is queued and closes the database. Later updates only mark the index stale. */
  close(): void {
    if (this.closed) return;
    this.flush();
    if (this.writerId) {
      try {
        this.write(() => this.db.prepare('DELETE FROM writers WHERE id = ?').run(this.writerId));
      } catch {
        /* left behind: a reader finds this pid dead later and rebuilds once */
      }
    }
    this.closed = true;
    // libsql closes the connection only when its statements are collected, so SQLite's own
    // checkpoint at close does not run: do it here, without waiting for other connections, so the
    // WAL is folded into the file when this is the last user (as better-sqlite3's close did).
    try {
      this.db.pragma('busy_timeout = 0');
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    } catch {
      /* another connection is busy: it, or the next one, checkpoints */
    }
    this.db.close();
  }
}

/** The inode of a file, or null when it does not exist. */
function inodeOf(path: string): number | null {
  try {
    return statSync(path).ino;
  } catch {
    return null;
  }
}

/** Whether a process with this pid exists (EPERM: it exists, owned by someone else). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The observer of a store opened without an index (or whose index could not be opened): its first
 * change marks the index stale, so whoever reads the index next rebuilds it.
 */
export function staleMarkingObserver(root: string): StoreObserver {
  let marked = false;
  const mark = (): void => {
    if (marked) return;
    marked = true;
    markIndexStale(root, 'the store was changed by a process without the index');
  };
  return {
    blobWritten: mark,
    blobDeleted: mark,
    entryWritten: mark,
    entryUsed: () => undefined, // last-use times are refreshed from file times by the next rebuild anyway
    entryDeleted: mark,
    rootWritten: mark,
    rootRemoved: mark,
  };
}

/**
 * Garbage collection and eviction, planned first and executed second (restic's `PlanPrune` ->
 * `Execute`): a plan lists what would go and how many bytes, so `--dry-run` is free.
 *
 * Mark: live action-cache entries (not older than `olderThan`, and valid) and store roots, down to
 * their manifests and chunks. Sweep: blobs nobody references that are older than the grace period.
 * The grace period is what makes GC safe beside writers: a writer stores chunks, then the manifest,
 * then the AC entry, so during a write its blobs are referenced by nothing yet; they are younger
 * than the grace period and stay.
 *
 * Execution order: AC entries first, then blobs, so a reader never sees an entry whose data was
 * swept first.
 *
 * Pending uploads are pinned: an entry or root that the upload journal (remote/journal.ts) still has
 * to send to a remote tier is neither dropped nor evicted, so write-behind never finds its data gone.
 *
 * Temp files (`v1/tmp/`) older than the grace period are swept too: what a killed writer left
 * behind (a pack being written can be 32 MiB). A live writer's temp file is never that old: an open
 * pack's mtime moves with every append, and spooled uploads live for seconds.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { describeAcEntry } from './action-cache';
import type { Digest } from './digest';
import type { LocalStore } from './local-store';
import { manifestChunks } from './manifest';
import { UploadJournal } from './remote/journal';
import { getManifest, treeProblem } from './tree';

/** The grace period GC and eviction keep unreferenced blobs for when none is given, ms (1 hour). */
export const DEFAULT_GC_GRACE_MS = 60 * 60 * 1000;

export interface GcOptions {
  /** Drop action-cache entries not written or hit for this long, ms. Default: keep all valid ones. */
  olderThanMs?: number;
  /** Keep unreferenced blobs younger than this, ms. Default {@link DEFAULT_GC_GRACE_MS}. */
  graceMs?: number;
  /** Which parts to collect: `cache` drops entries only, `store` sweeps blobs only, `all` both. */
  scope?: 'cache' | 'store' | 'all';
  now?: number;
}

export interface PlannedEntry {
  namespace: string;
  key: Digest;
  manifest: Digest | null;
  lastUsedMs: number;
  /**
   * `invalid`: does not parse, or names another key; `unservable`: its manifest or a chunk is gone
   * (quarantined, evicted), so it can never be a hit; `older-than`; `evicted`.
   */
  reason: 'older-than' | 'invalid' | 'unservable' | 'evicted';
}

export interface GcPlan {
  entries: PlannedEntry[];
  blobs: Array<{ digest: Digest; storedSize: number }>;
  /** Bytes the blobs to delete take on disk. */
  freedBytes: number;
  /** Blobs and bytes that stay. */
  keptBlobs: number;
  keptBytes: number;
  /** Unreferenced blobs kept because they are younger than the grace period. */
  inGrace: number;
  /** Entries kept, though old enough or chosen for eviction, because an upload of them is pending. */
  pinned: number;
  /** Temp files older than the grace period (left by killed writers), with their sizes in bytes. */
  tmpFiles?: Array<{ name: string; size: number }>;
}

export interface GcResult {
  deletedEntries: number;
  deletedBlobs: number;
  /** Bytes of blobs and temp files removed. */
  freedBytes: number;
  deletedTmpFiles?: number;
}

/** Files in `v1/tmp/` not modified for `graceMs`. */
async function staleTmpFiles(store: LocalStore, graceMs: number, now: number): Promise<Array<{ name: string; size: number }>> {
  const dir = join(store.root, 'v1', 'tmp');
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return [];
  }
  const out: Array<{ name: string; size: number }> = [];
  for (const name of names) {
    try {
      const st = await fsp.lstat(join(dir, name));
      if (st.isFile() && now - st.mtimeMs >= graceMs) out.push({ name, size: st.size });
    } catch {
      // Renamed into place or removed meanwhile.
    }
  }
  return out;
}

interface LiveEntry {
  namespace: string;
  key: Digest;
  manifest: Digest;
  lastUsedMs: number;
  size: number;
}

/**
 * Reads every AC entry: well-formed ones with their manifest, malformed ones to drop. An entry that
 * only fails its signature is kept, blobs and all: that says which secret this process holds, not
 * that the entry is bad, and a GC run with a wrong secret must not empty the store.
 */
async function scanEntries(store: LocalStore): Promise<{ live: LiveEntry[]; invalid: PlannedEntry[] }> {
  const live: LiveEntry[] = [];
  const invalid: PlannedEntry[] = [];
  for await (const { namespace, key, lastUsedMs } of store.entries.list()) {
    const bytes = await store.entries.get(namespace, key);
    const entry = bytes ? describeAcEntry(bytes, namespace, key) : null;
    // The store's last-use time (written or hit) when it tracks one; else when the entry was made.
    const used = lastUsedMs ?? entry?.created ?? 0;
    if (entry) live.push({ namespace, key, manifest: entry.manifest, lastUsedMs: used, size: entry.size });
    else if (bytes) invalid.push({ namespace, key, manifest: null, lastUsedMs: used, reason: 'invalid' });
  }
  return { live, invalid };
}

/** What pending uploads name: entries (`namespace/key`) and root manifests. */
async function pendingUploads(store: LocalStore): Promise<{ entries: Set<string>; roots: Digest[] }> {
  const entries = new Set<string>();
  const roots: Digest[] = [];
  for (const r of await new UploadJournal(store.root).protectedRecords()) {
    if (r.kind === 'ac') entries.add(`${r.namespace}/${r.key}`);
    else if (r.kind === 'root') roots.push(r.digest);
  }
  return { entries, roots };
}

/** Digests reachable from manifests: the manifests themselves and their chunks. */
async function reach(store: LocalStore, manifests: Iterable<Digest>): Promise<Map<Digest, Digest[]>> {
  const out = new Map<Digest, Digest[]>();
  for (const m of manifests) {
    if (out.has(m)) continue;
    let chunks: Digest[] = [];
    try {
      const manifest = await getManifest(store.blobs, m);
      if (manifest) chunks = manifestChunks(manifest);
    } catch {
      // A corrupt or invalid manifest references nothing; verify reports it.
    }
    out.set(m, chunks);
  }
  return out;
}

async function sweep(store: LocalStore, referenced: Set<Digest>, graceMs: number, now: number): Promise<Omit<GcPlan, 'entries' | 'pinned'>> {
  const plan = { blobs: [] as GcPlan['blobs'], freedBytes: 0, keptBlobs: 0, keptBytes: 0, inGrace: 0 };
  for await (const b of store.blobs.list()) {
    const young = now - (b.mtimeMs ?? now) < graceMs;
    if (referenced.has(b.digest) || young) {
      plan.keptBlobs++;
      plan.keptBytes += b.storedSize;
      if (!referenced.has(b.digest)) plan.inGrace++;
      continue;
    }
    plan.blobs.push({ digest: b.digest, storedSize: b.storedSize });
    plan.freedBytes += b.storedSize;
  }
  return plan;
}

function referencedBy(graph: Map<Digest, Digest[]>, manifests: Iterable<Digest>): Set<Digest> {
  const refs = new Set<Digest>();
  for (const m of manifests) {
    refs.add(m);
    for (const c of graph.get(m) ?? []) refs.add(c);
  }
  return refs;
}

/** Plans a GC. Nothing is changed. */
export async function planGc(store: LocalStore, options: GcOptions = {}): Promise<GcPlan> {
  const now = options.now ?? Date.now();
  const scope = options.scope ?? 'all';
  const { live, invalid } = await scanEntries(store);
  const pending = await pendingUploads(store);
  const entries: PlannedEntry[] = scope === 'store' ? [] : [...invalid];
  const kept: LiveEntry[] = [];
  let pinned = 0;
  for (const e of live) {
    const old = scope !== 'store' && options.olderThanMs !== undefined && now - e.lastUsedMs > options.olderThanMs;
    const pendingUpload = pending.entries.has(`${e.namespace}/${e.key}`);
    // An entry that can never be a hit goes with the cache scopes (its next upload stores it again).
    if (!old && scope !== 'store' && !pendingUpload && (await treeProblem(store.blobs, e.manifest))) {
      entries.push({ namespace: e.namespace, key: e.key, manifest: e.manifest, lastUsedMs: e.lastUsedMs, reason: 'unservable' });
      continue;
    }
    if (!old) kept.push(e);
    else if (pendingUpload) {
      pinned++;
      kept.push(e);
    } else entries.push({ namespace: e.namespace, key: e.key, manifest: e.manifest, lastUsedMs: e.lastUsedMs, reason: 'older-than' });
  }
  if (scope === 'cache') return { entries, blobs: [], freedBytes: 0, keptBlobs: 0, keptBytes: 0, inGrace: 0, pinned };
  const roots = [...(await store.roots.list()).map((r) => r.digest), ...pending.roots];
  const liveManifests = [...kept.map((e) => e.manifest), ...roots];
  const graph = await reach(store, liveManifests);
  const graceMs = options.graceMs ?? DEFAULT_GC_GRACE_MS;
  return { entries, ...(await sweep(store, referencedBy(graph, liveManifests), graceMs, now)), pinned, tmpFiles: await staleTmpFiles(store, graceMs, now) };
}

export interface EvictOptions {
  /** Target size of the blobs on disk, bytes. */
  toSizeBytes: number;
  /** Which entries go first: least recently used (default) or largest. */
  strategy?: 'lru' | 'largest';
  graceMs?: number;
  now?: number;
}

/**
 * Plans eviction down to a size: drops action-cache entries (least recently used first, or largest
 * first) until the blobs still referenced by the remaining entries and roots fit, then sweeps what
 * became unreferenced. Roots and entries with a pending upload are never evicted. Blobs inside the
 * grace period stay, so the plan may end above the target; `keptBytes` says where it lands.
 */
export async function planEvict(store: LocalStore, options: EvictOptions): Promise<GcPlan> {
  const now = options.now ?? Date.now();
  const { live, invalid } = await scanEntries(store);
  const pending = await pendingUploads(store);
  const sizes = new Map<Digest, number>();
  for await (const b of store.blobs.list()) sizes.set(b.digest, b.storedSize);
  const roots = [...(await store.roots.list()).map((r) => r.digest), ...pending.roots];
  const graph = await reach(store, [...live.map((e) => e.manifest), ...roots]);
  // Reference counts over kept entries and roots; a blob frees its bytes when its count reaches 0.
  const refs = new Map<Digest, number>();
  const addRefs = (m: Digest, d: number): Digest[] => {
    const freed: Digest[] = [];
    for (const x of new Set([m, ...(graph.get(m) ?? [])])) {
      const n = (refs.get(x) ?? 0) + d;
      refs.set(x, n);
      if (n === 0) freed.push(x);
    }
    return freed;
  };
  for (const e of live) addRefs(e.manifest, 1);
  for (const r of roots) addRefs(r, 1);
  let referencedBytes = 0;
  for (const [d, n] of refs) if (n > 0) referencedBytes += sizes.get(d) ?? 0;

  const entries: PlannedEntry[] = [...invalid];
  const order = [...live].sort((a, b) => (options.strategy === 'largest' ? b.size - a.size || a.lastUsedMs - b.lastUsedMs : a.lastUsedMs - b.lastUsedMs));
  let pinned = 0;
  for (const e of order) {
    if (referencedBytes <= options.toSizeBytes) break;
    if (pending.entries.has(`${e.namespace}/${e.key}`)) {
      pinned++;
      continue;
    }
    for (const d of addRefs(e.manifest, -1)) referencedBytes -= sizes.get(d) ?? 0;
    entries.push({ namespace: e.namespace, key: e.key, manifest: e.manifest, lastUsedMs: e.lastUsedMs, reason: 'evicted' });
  }
  const referenced = new Set([...refs].filter(([, n]) => n > 0).map(([d]) => d));
  return { entries, ...(await sweep(store, referenced, options.graceMs ?? DEFAULT_GC_GRACE_MS, now)), pinned };
}

/** Carries out a plan: entries first, then blobs. Blobs already gone are not an error. */
export async function executeGc(store: LocalStore, plan: GcPlan): Promise<GcResult> {
  let deletedEntries = 0;
  for (const e of plan.entries) if (await store.entries.delete(e.namespace, e.key)) deletedEntries++;
  let deletedTmpFiles = 0;
  let tmpBytes = 0;
  for (const f of plan.tmpFiles ?? []) {
    try {
      await fsp.unlink(join(store.root, 'v1', 'tmp', f.name));
      deletedTmpFiles++;
      tmpBytes += f.size;
    } catch {
      // Gone already.
    }
  }
  // One call: a pack holding several of them is rewritten once (store/packs.ts).
  const removed = await store.blobs.deleteMany(plan.blobs.map((b) => b.digest));
  let deletedBlobs = 0;
  let freedBytes = 0;
  for (const b of plan.blobs) {
    if (removed.has(b.digest)) {
      deletedBlobs++;
      freedBytes += b.storedSize;
    }
  }
  return { deletedEntries, deletedBlobs, freedBytes: freedBytes + tmpBytes, deletedTmpFiles };
}

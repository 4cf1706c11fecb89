/**
 * GC of a remote (object-store) tier: plan, then execute (restic's prune, made safe without locks by
 * time). Writers decide what to upload from the pack indexes they last read, so a pack cannot simply
 * vanish the moment it looks dead: a writer may be about to name one of its chunks in a new tree.
 *
 * Two phases, a grace period apart:
 * 1. A pack with no live chunk is **condemned** (`v1/condemned/<pack>`): from their next refresh,
 *    writers stop counting its chunks as present and upload them again; readers still read it.
 * 2. A later pass **deletes** a pack condemned longer ago than the grace period if it is still dead,
 *    and **revives** one that became live again (a tree written meanwhile names it).
 * A pack mostly dead (live bytes under `repackBelow` of it) has its live chunks copied to a new pack,
 * the live trees that pointed into it rewritten, and is then condemned. Packs, trees and entries
 * younger than the grace period are never touched. Liveness: every AC entry (less those dropped by
 * `olderThanMs`, measured from when the entry was written: object stores keep no access time) and
 * every store root names a tree; a tree's chunks are live.
 */
import { isDigest, type Digest } from '../digest';
import { CascacheError, ErrorCodes } from '../errors';
import { ObjectAcStore } from './object-ac';
import { PackStore } from './pack-store';
import { manifestOf, type RemoteTier } from './tier';

/** Options for {@link planRemoteGc}. */
export interface RemoteGcOptions {
  /** Drop AC entries written longer ago than this, ms. Default: keep every entry. */
  olderThanMs?: number;
  /** Touch nothing younger than this, and delete condemned packs only this long after, ms. Default 1 h. */
  graceMs?: number;
  /** Repack a pack whose live bytes are under this fraction of it. Default 0.5. */
  repackBelow?: number;
  /** Delete shared run records written longer ago than this, ms, but the newest 5 of each tool and branch. Default 30 days. */
  runsOlderThanMs?: number;
  /** Clock, ms (tests). */
  now?: number;
}

/** What {@link executeRemoteGc} will do, with figures. */
export interface RemoteGcPlan {
  /** The clock the plan was made at, ms; condemnations are stamped with it. */
  now: number;
  entries: Array<{ namespace: string; key: Digest }>;
  trees: Digest[];
  condemn: Array<{ pack: Digest; bytes: number }>;
  deletePacks: Array<{ pack: Digest; bytes: number }>;
  repack: Array<{ pack: Digest; liveBytes: number; deadBytes: number }>;
  revive: Digest[];
  /** Bytes the deleted packs take. */
  freedBytes: number;
  /** Bytes condemned now (freed by a pass after the grace period). */
  condemnedBytes: number;
  /** Live trees (their manifest digests) and the bytes of live chunks. */
  liveTrees: Digest[];
  liveBytes: number;
  /** Expired shared run records (object keys). */
  runs: string[];
}

/** Run records kept per tool and branch whatever their age: prefetch needs the newest. */
const KEEP_RUNS_PER_BRANCH = 5;

function packTier(tier: RemoteTier): { blobs: PackStore; entries: ObjectAcStore } {
  if (!(tier.blobs instanceof PackStore) || !(tier.entries instanceof ObjectAcStore)) {
    throw new CascacheError(ErrorCodes.CONFIG, `${tier.name} is not an object-store tier; run cascache gc on that server itself`);
  }
  return { blobs: tier.blobs, entries: tier.entries };
}

/**
 * Computes what GC would do on a remote tier. Reads every AC entry and live tree (one GET each) and
 * every pack index; writes nothing.
 * @throws `E_CONFIG` for a tier that is not on an object store; `E_UNAVAILABLE` when it cannot be read.
 */
export async function planRemoteGc(tier: RemoteTier, options: RemoteGcOptions = {}): Promise<RemoteGcPlan> {
  const { blobs, entries } = packTier(tier);
  const now = options.now ?? Date.now();
  const grace = options.graceMs ?? 3_600_000;
  const plan: RemoteGcPlan = { now, entries: [], trees: [], condemn: [], deletePacks: [], repack: [], revive: [], freedBytes: 0, condemnedBytes: 0, liveTrees: [], liveBytes: 0, runs: [] };
  // Shared run records expire: only prefetch reads them, and it wants recent ones.
  const byBranch = new Map<string, Array<{ key: string; mtimeMs: number }>>();
  for await (const r of entries.listAllRuns()) {
    const prefix = r.key.slice(0, r.key.lastIndexOf('/'));
    byBranch.set(prefix, [...(byBranch.get(prefix) ?? []), r]);
  }
  for (const runs of byBranch.values()) {
    runs.sort((a, b) => (a.key < b.key ? -1 : 1)); // newest first, by construction of the key
    for (const r of runs.slice(KEEP_RUNS_PER_BRANCH)) if (now - r.mtimeMs > (options.runsOlderThanMs ?? 30 * 86_400_000)) plan.runs.push(r.key);
  }

  const liveTrees = new Set<Digest>();
  for await (const e of entries.list()) {
    if (options.olderThanMs !== undefined && e.lastUsedMs !== undefined && now - e.lastUsedMs > options.olderThanMs) {
      plan.entries.push({ namespace: e.namespace, key: e.key });
      continue;
    }
    const bytes = await entries.get(e.namespace, e.key);
    const manifest = bytes ? manifestOf(bytes) : null;
    if (manifest) liveTrees.add(manifest);
  }
  for await (const o of blobs.objects.list('v1/roots/')) {
    const m = /^v1\/roots\/([0-9a-f]{64})\.json$/.exec(o.key);
    if (m) liveTrees.add(m[1]!);
  }
  await blobs.refresh(true);
  const liveChunks = new Set<Digest>();
  for (const t of liveTrees) {
    if (!(await blobs.loadTree(t))) continue;
    plan.liveTrees.push(t);
    for (const d of blobs.treeInfo(t)!.chunks) liveChunks.add(d);
  }
  for await (const o of blobs.objects.list('v1/trees/')) {
    const d = o.key.slice('v1/trees/'.length);
    if (isDigest(d) && !liveTrees.has(d) && (o.mtimeMs === undefined || now - o.mtimeMs > grace)) plan.trees.push(d);
  }
  const condemned = blobs.condemnedPacks();
  for (const [pack, info] of await blobs.packs()) {
    const total = info.blobs.reduce((n, b) => n + b.length, 0);
    const live = info.blobs.filter((b) => liveChunks.has(b.digest)).reduce((n, b) => n + b.length, 0);
    plan.liveBytes += live;
    const since = condemned.get(pack);
    if (since !== undefined) {
      if (live > 0) plan.revive.push(pack);
      else if (now - since > grace) {
        plan.deletePacks.push({ pack, bytes: total });
        plan.freedBytes += total;
      }
      continue;
    }
    if (info.mtimeMs !== undefined && now - info.mtimeMs <= grace) continue;
    if (live === 0) {
      plan.condemn.push({ pack, bytes: total });
      plan.condemnedBytes += total;
    } else if (live < total * (options.repackBelow ?? 0.5)) {
      plan.repack.push({ pack, liveBytes: live, deadBytes: total - live });
      plan.condemnedBytes += total;
    }
  }
  return plan;
}

/** What {@link executeRemoteGc} did. */
export interface RemoteGcResult {
  deletedEntries: number;
  deletedRuns: number;
  deletedTrees: number;
  condemnedPacks: number;
  deletedPacks: number;
  repackedPacks: number;
  rewrittenTrees: number;
  freedBytes: number;
}

/**
 * Applies a plan, in an order that never leaves a live tree pointing at a missing pack: entries,
 * then repacks (copy live chunks, rewrite the trees that pointed into the old pack, condemn it),
 * then condemnations and revivals, then deletions of packs condemned a grace period ago, then dead
 * trees.
 */
export async function executeRemoteGc(tier: RemoteTier, plan: RemoteGcPlan): Promise<RemoteGcResult> {
  const { blobs, entries } = packTier(tier);
  const result: RemoteGcResult = { deletedEntries: 0, deletedRuns: 0, deletedTrees: 0, condemnedPacks: 0, deletedPacks: 0, repackedPacks: 0, rewrittenTrees: 0, freedBytes: 0 };
  for (const e of plan.entries) if (await entries.delete(e.namespace, e.key)) result.deletedEntries++;
  for (const r of plan.runs) if (await entries.deleteRun(r)) result.deletedRuns++;
  if (plan.repack.length > 0) {
    const moving = new Set(plan.repack.map((r) => r.pack));
    // Live chunks of the packs being repacked: those some loaded tree names.
    const affected: Digest[] = [];
    const keep = new Set<Digest>();
    for (const manifest of plan.liveTrees) {
      if (!(await blobs.loadTree(manifest))) continue;
      const info = blobs.treeInfo(manifest);
      if (!info || ![...info.packs].some((p) => moving.has(p))) continue;
      affected.push(manifest);
      for (const d of info.chunks) keep.add(d);
    }
    for (const r of plan.repack) {
      await blobs.copyOut(r.pack, keep);
      result.repackedPacks++;
    }
    for (const manifest of affected) {
      await blobs.writeTree(manifest, blobs.treeInfo(manifest)!.manifestBytes);
      result.rewrittenTrees++;
    }
    for (const r of plan.repack) await blobs.condemn(r.pack, plan.now);
  }
  for (const c of plan.condemn) {
    await blobs.condemn(c.pack, plan.now);
    result.condemnedPacks++;
  }
  for (const p of plan.revive) await blobs.revive(p);
  for (const d of plan.deletePacks) {
    await blobs.deletePack(d.pack);
    result.deletedPacks++;
    result.freedBytes += d.bytes;
  }
  for (const t of plan.trees) {
    await blobs.deleteTree(t);
    result.deletedTrees++;
  }
  return result;
}

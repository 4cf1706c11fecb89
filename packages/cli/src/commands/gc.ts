/**
 * `cascache gc store|cache|all` and `cascache evict`: plan, then execute (`--dry-run` shows the plan
 * only). See core's gc.ts for what is kept and why a write in progress is never harmed.
 */
import type { Command } from 'commander';
import { CascacheError, DEFAULT_GC_GRACE_MS, ErrorCodes, executeGc, executeRemoteGc, planEvict, planGc, planRemoteGc, type GcPlan, type LocalStore, type RemoteTier } from '@cascache/core';
import { formatBytes, openCliStore, resolveTiers, withStoreFlags, type StoreFlags } from '../context';

/** `1 h`, `10 min`, `30 s`, `0 s`: a span of ms as people write it. */
function formatAgeSpan(ms: number): string {
  if (ms >= 3_600_000 && ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${Math.round(ms / 1000)} s`;
}

import type { Io } from '../program';
import { parseAge, parseSize } from '../sizes';

function describePlan(plan: GcPlan, dryRun: boolean, graceMs: number): string {
  const verb = dryRun ? 'would' : 'will';
  const byReason = new Map<string, number>();
  for (const e of plan.entries) byReason.set(e.reason, (byReason.get(e.reason) ?? 0) + 1);
  const reasons = [...byReason].map(([r, n]) => `${n} ${r}`).join(', ');
  return (
    `cascache: ${verb} drop ${plan.entries.length} cache entr${plan.entries.length === 1 ? 'y' : 'ies'}${reasons ? ` (${reasons})` : ''} ` +
    `and delete ${plan.blobs.length} blobs, freeing ${formatBytes(plan.freedBytes)}; ` +
    `keeping ${plan.keptBlobs} blobs, ${formatBytes(plan.keptBytes)}${plan.inGrace ? ` (${plan.inGrace} unreferenced but younger than the grace period, ${formatAgeSpan(graceMs)}; --grace to change)` : ''}` +
    `${plan.pinned ? `; kept ${plan.pinned} entr${plan.pinned === 1 ? 'y' : 'ies'} whose upload to a remote tier is pending` : ''}` +
    `${plan.tmpFiles?.length ? `; ${verb} remove ${plan.tmpFiles.length} temp file(s) older than the grace period (${formatBytes(plan.tmpFiles.reduce((a, f) => a + f.size, 0))}, left by interrupted writers)` : ''}\n`
  );
}

async function run(io: Io, flags: StoreFlags & { dryRun?: boolean; grace?: number }, makePlan: (store: LocalStore) => Promise<GcPlan>, options: { existing: boolean }): Promise<void> {
  const store = await openCliStore(flags, io, process.env, process.cwd(), options);
  const plan = await makePlan(store);
  const result = flags.dryRun ? null : await executeGc(store, plan);
  if (flags.json) {
    io.stdout.write(`${JSON.stringify({ dryRun: flags.dryRun === true, plan, result }, null, 2)}\n`);
    return;
  }
  io.stdout.write(describePlan(plan, flags.dryRun === true, flags.grace ?? DEFAULT_GC_GRACE_MS));
  if (result) io.stdout.write(`cascache: dropped ${result.deletedEntries} entries, deleted ${result.deletedBlobs} blobs, freed ${formatBytes(result.freedBytes)}\n`);
}

/**
 * GC of one remote tier (with --remote): plan, print, execute. Dead packs are condemned now and
 * deleted by a pass one grace period later (see core's remote/gc.ts).
 */
async function remoteGc(io: Io, tier: RemoteTier, flags: StoreFlags & { dryRun?: boolean; grace?: number }, olderThanMs: number | undefined): Promise<void> {
  if (tier.readOnly) {
    io.stderr.write(`cascache: ${tier.name} is read-only; not collecting it\n`);
    return;
  }
  const plan = await planRemoteGc(tier, { olderThanMs, graceMs: flags.grace });
  const result = flags.dryRun ? null : await executeRemoteGc(tier, plan);
  if (flags.json) {
    io.stdout.write(`${JSON.stringify({ tier: tier.name, dryRun: flags.dryRun === true, plan: { ...plan, liveTrees: plan.liveTrees.length }, result }, null, 2)}\n`);
    return;
  }
  const verb = flags.dryRun ? 'would' : 'will';
  io.stdout.write(
    `cascache: ${tier.name}: ${verb} drop ${plan.entries.length} entries and ${plan.trees.length} dead trees, condemn ${plan.condemn.length} dead packs ` +
      `and repack ${plan.repack.length} (${formatBytes(plan.condemnedBytes)}, freed by a pass after the grace period), ` +
      `delete ${plan.deletePacks.length} packs condemned earlier (${formatBytes(plan.freedBytes)}) and ${plan.runs.length} run records older than 30 days; ${plan.liveTrees.length} live trees, ${formatBytes(plan.liveBytes)} live\n`,
  );
  if (result) io.stdout.write(`cascache: ${tier.name}: deleted ${result.deletedPacks} packs, freed ${formatBytes(result.freedBytes)}; repacked ${result.repackedPacks}, condemned ${result.condemnedPacks}\n`);
}

export function registerGc(program: Command, io: Io): void {
  withStoreFlags(
    program
      .command('gc')
      .description('Collect garbage: drop stale cache entries (cache), sweep unreferenced blobs (store), or both (all)')
      .argument('[what]', 'store | cache | all', 'all')
      .option('--dry-run', 'show the plan, change nothing')
      .option('--older-than <age>', 'drop cache entries not written or hit for this long (e.g. 30d)', parseAge)
      .option('--grace <age>', 'keep unreferenced blobs younger than this (default 1h; 0s for none)', parseAge),
  ).action(async (what: string, flags: StoreFlags & { dryRun?: boolean; olderThan?: number; grace?: number }) => {
    if (!['store', 'cache', 'all'].includes(what)) throw new CascacheError(ErrorCodes.CONFIG, `gc takes store, cache or all, not ${what}`);
    // With remote tiers it may run where there is no local store (a CI job collecting the bucket).
    const existing = resolveTiers(flags, process.env).length === 0;
    await run(io, flags, (s) => planGc(s, { scope: what as 'store' | 'cache' | 'all', olderThanMs: flags.olderThan, graceMs: flags.grace }), { existing });
    const store = await openCliStore(flags, io, process.env, process.cwd(), { existing });
    for (const tier of store.layered?.remotes ?? []) await remoteGc(io, tier, flags, what === 'store' ? undefined : flags.olderThan);
    await store.layered?.close();
  });

  withStoreFlags(
    program
      .command('evict')
      .description('Drop cache entries until the store fits a size (roots are never evicted)')
      .requiredOption('--to-size <size>', 'target size on disk (e.g. 10GiB)', parseSize)
      .option('--strategy <lru|largest>', 'which entries go first', 'lru')
      .option('--dry-run', 'show the plan, change nothing')
      .option('--grace <age>', 'keep unreferenced blobs younger than this (default 1h)', parseAge),
  ).action(async (flags: StoreFlags & { toSize: number; strategy: string; dryRun?: boolean; grace?: number }) => {
    if (flags.strategy !== 'lru' && flags.strategy !== 'largest') throw new CascacheError(ErrorCodes.CONFIG, '--strategy is lru or largest');
    await run(io, flags, (s) => planEvict(s, { toSizeBytes: flags.toSize, strategy: flags.strategy as 'lru' | 'largest', graceMs: flags.grace }), { existing: true });
  });
}

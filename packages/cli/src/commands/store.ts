/**
 * `cascache store add|query|get|list|stats|rm`: named trees in the content-addressed store. The same
 * tree always gets the same root digest; a root keeps its data alive through GC until removed.
 */
import type { Command } from 'commander';
import { assertDigest, CascacheError, ErrorCodes, getManifest } from '@cascache/core';
import { currentStats, formatAge, formatBytes, ingestWithProgress, openCliStore, openExistingCliStore, printRows, restoreBeside, withStoreFlags, type StoreFlags } from '../context';
import type { Io } from '../program';

export function registerStore(program: Command, io: Io): void {
  const store = program.command('store').description('Named trees in the content-addressed store (GC roots until removed)');

  withStoreFlags(store.command('add').description('Store a directory tree; prints its root digest').argument('<name>', 'a name for it').requiredOption('--source <dir>', 'directory to store')).action(
    async (name: string, flags: StoreFlags & { source: string }) => {
      const s = await openCliStore(flags, io);
      const r = await ingestWithProgress(io, flags, s, flags.source, `storing ${name}`);
      const root = await s.roots.add({ digest: r.digest, name, size: r.logicalBytes, files: r.files });
      await s.layered?.recordUpload({ kind: 'root', digest: r.digest });
      if (flags.json) {
        io.stdout.write(`${JSON.stringify({ ...root, chunks: r.chunks, newChunks: r.newChunks, newBytes: r.newBytes, dedupBytes: r.dedupBytes }, null, 2)}\n`);
        return;
      }
      io.stdout.write(`${r.digest}\n`);
      io.stderr.write(`cascache: stored ${name}: ${r.files} files, ${formatBytes(r.logicalBytes)}; ${formatBytes(r.newBytes)} new, ${formatBytes(r.dedupBytes)} already stored\n`);
    },
  );

  withStoreFlags(store.command('query').description('Show what a root digest holds').argument('<digest>', 'root digest')).action(async (digest: string, flags: StoreFlags) => {
    assertDigest(digest, 'root digest');
    const s = await openExistingCliStore(flags, io);
    const root = await s.roots.get(digest);
    const manifest = await getManifest(s.blobs, digest);
    if (!root && !manifest) throw new CascacheError(ErrorCodes.NOT_FOUND, `no tree ${digest} in ${s.root}`);
    const files = manifest?.entries.filter((e) => e.type === 'file').length ?? root!.files;
    const info = { digest, name: root?.name ?? null, size: root?.size ?? manifest!.entries.reduce((a, e) => a + (e.type === 'file' ? e.size : 0), 0), files, created: root?.created ?? null, root: root !== null, complete: manifest !== null };
    printRows(io, flags.json, ['digest', 'name', 'size', 'files', 'created'], [[digest, info.name ?? '(not a root)', formatBytes(info.size), info.files, info.created ? new Date(info.created).toISOString() : '-']], info);
  });

  withStoreFlags(
    store
      .command('get')
      .description('Restore a tree into a directory (restored beside it, then moved into place)')
      .argument('<digest>', 'root digest')
      .requiredOption('--target <dir>', 'directory to restore into (must not exist or be empty)')
      .option('--force', 'replace a non-empty target'),
  ).action(async (digest: string, flags: StoreFlags & { target: string; force?: boolean }) => {
    assertDigest(digest, 'root digest');
    const s = await openCliStore(flags, io);
    if (s.layered && !(await s.layered.fetchTree(digest))) throw new CascacheError(ErrorCodes.NOT_FOUND, `no complete tree ${digest} in the local store or its remotes`);
    await restoreBeside(s, digest, flags.target, flags.force === true);
    if (flags.json) io.stdout.write(`${JSON.stringify({ digest, target: flags.target })}\n`);
    else io.stderr.write(`cascache: restored ${digest.slice(0, 12)} into ${flags.target}\n`);
  });

  withStoreFlags(store.command('list').description('List store roots, newest first')).action(async (flags: StoreFlags) => {
    const roots = await (await openExistingCliStore(flags, io)).roots.list();
    printRows(io, flags.json, ['digest', 'name', 'size', 'files', 'added'], roots.map((r) => [r.digest.slice(0, 16), r.name, formatBytes(r.size), r.files, formatAge(r.created)]), roots);
  });

  withStoreFlags(store.command('stats').description('Roots, logical bytes, blobs and bytes on disk')).action(async (flags: StoreFlags) => {
    const s = await openExistingCliStore(flags, io);
    const roots = await s.roots.list();
    const { blobs, storedBytes } = (await currentStats(s, io, flags)).stats;
    const logicalBytes = roots.reduce((a, r) => a + r.size, 0);
    const stats = { roots: roots.length, logicalBytes, blobs, storedBytes };
    printRows(io, flags.json, ['roots', 'logical size', 'blobs', 'stored on disk'], [[stats.roots, formatBytes(logicalBytes), blobs, formatBytes(storedBytes)]], stats);
  });

  withStoreFlags(store.command('rm').description('Remove a root (its data goes at the next gc)').argument('<digest>', 'root digest')).action(async (digest: string, flags: StoreFlags) => {
    assertDigest(digest, 'root digest');
    if (!(await (await openExistingCliStore(flags, io)).roots.remove(digest))) throw new CascacheError(ErrorCodes.NOT_FOUND, `no root ${digest}`);
    if (!flags.json) io.stderr.write(`cascache: removed root ${digest.slice(0, 12)}\n`);
  });
}

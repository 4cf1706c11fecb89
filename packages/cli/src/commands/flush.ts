/**
 * `cascache flush`: uploads what the journal holds for remote tiers (entries and roots written while a
 * remote was unreachable, or by an agent that stopped first) and reports what it sent. The tiers are
 * the configured ones (`--remote`, `CASCACHE_REMOTE`, `CASCACHE_TIERS`) plus every tier the journal
 * remembers by URL. Exit 0 when nothing is left pending, 8 (unavailable) otherwise.
 */
import type { Command } from 'commander';
import { openLocalStore, UploadJournal, type TierConfig } from '@cascache/core';
import { formatBytes, openLayered, printRows, resolveCliStoreDir, resolveTiers, withStoreFlags, type StoreFlags } from '../context';
import { ExitCodes } from '../exit-codes';
import type { Io } from '../program';
import { parseAge } from '../sizes';

export function registerFlush(program: Command, io: Io, setExitCode: (code: number) => void): void {
  withStoreFlags(
    program
      .command('flush')
      .description('Upload pending journal records to remote tiers and report what was sent')
      .option('--timeout <age>', 'give up after this long, e.g. 30s, 5m', parseAge),
  ).action(async (flags: StoreFlags & { timeout?: number }) => {
    const secret = process.env.CASCACHE_SECRET ? Buffer.from(process.env.CASCACHE_SECRET, 'utf8') : null;
    const local = await openLocalStore({ root: resolveCliStoreDir(flags, process.env, process.cwd()), secret, writer: 'cascache-cli' });
    const tiers: TierConfig[] = resolveTiers(flags, process.env);
    const journal = new UploadJournal(local.root);
    const known = await journal.tiers();
    for (const t of known) if (t.url && t.pending > 0 && !tiers.some((c) => c.url === t.url)) tiers.push({ url: t.url });
    if (tiers.length === 0) {
      if (flags.json) io.stdout.write(`${JSON.stringify({ drained: true, tiers: [] })}\n`);
      else io.stderr.write('cascache: no remote tiers configured and nothing pending in the journal\n');
      return;
    }
    const layered = openLayered(local, tiers, io, secret);
    try {
      const report = await layered.drain({ timeoutMs: flags.timeout });
      const rows = layered.writable().map((t) => [t.name, report.pending[t.name] ?? 0, report.failed[t.name] ?? 0]);
      if (flags.json) io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else {
        printRows(io, false, ['tier', 'pending', 'set aside'], rows, null);
        io.stderr.write(
          `cascache: sent ${report.stats.records} record(s): ${formatBytes(report.stats.bytesSent)} in ${report.stats.packs} pack(s); ` +
            `${report.stats.blobsDeduplicated} blobs (${formatBytes(report.stats.bytesDeduplicated)}) were already there\n`,
        );
      }
      if (!report.drained) setExitCode(ExitCodes.UNAVAILABLE);
    } finally {
      await layered.close();
    }
  });
}

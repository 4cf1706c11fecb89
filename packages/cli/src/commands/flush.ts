/**
 * `cascache flush`: uploads what the journal holds for remote tiers (entries and roots written while a
 * remote was unreachable, or by an agent that stopped first) and reports what it sent. The tiers are
 * the configured ones (`--remote`, `CASCACHE_REMOTE`, `CASCACHE_TIERS`) plus every tier the journal
 * remembers by URL. Exit 0 when nothing is left pending, 8 (unavailable) otherwise.
 */
import type { Command } from 'commander';
import { openLocalStore, UploadJournal, type TierConfig } from '@cascache/core';
import { formatBytes, openLayered, printRows, resolveCliStoreDir, resolveTiers, resolveTrust, withStoreFlags, type StoreFlags } from '../context';
import { ExitCodes } from '../exit-codes';
import type { Io } from '../program';
import { parseAge } from '../sizes';

/** How long `flush` waits without `--timeout`, ms. */
export const DEFAULT_FLUSH_TIMEOUT_MS = 10 * 60_000;

export function registerFlush(program: Command, io: Io, setExitCode: (code: number) => void): void {
  withStoreFlags(
    program
      .command('flush')
      .description('Upload pending journal records to remote tiers and report what was sent')
      .option('--timeout <age>', 'give up after this long, e.g. 30s, 5m (default 10m)', parseAge)
      .option('--retry-set-aside', 'first move uploads set aside after permanent errors (credentials, permissions) back to pending'),
  ).action(async (flags: StoreFlags & { timeout?: number; retrySetAside?: boolean }) => {
    const local = await openLocalStore({ root: resolveCliStoreDir(flags, process.env, process.cwd()), secret: null, trust: resolveTrust(flags, process.env), writer: 'cascache-cli' });
    const tiers: TierConfig[] = resolveTiers(flags, process.env);
    const journal = new UploadJournal(local.root);
    if (flags.retrySetAside) {
      const moved = await journal.retryFailed();
      if (!flags.json) io.stderr.write(`cascache: ${moved} set-aside upload(s) moved back to pending\n`);
    }
    const known = await journal.tiers();
    for (const t of known) if (t.url && (t.pending > 0 || t.failed > 0) && !tiers.some((c) => c.url === t.url)) tiers.push({ url: t.url });
    if (tiers.length === 0) {
      if (flags.json) io.stdout.write(`${JSON.stringify({ drained: true, tiers: [] })}\n`);
      else io.stderr.write('cascache: no remote tiers configured and nothing pending in the journal\n');
      return;
    }
    const layered = openLayered(local, tiers, io);
    try {
      const timeoutMs = flags.timeout ?? DEFAULT_FLUSH_TIMEOUT_MS;
      const pendingBefore = known.reduce((n, t) => n + t.pending, 0);
      if (!flags.json) {
        io.stderr.write(`cascache: uploading ${pendingBefore} pending record(s) to ${layered.writable().map((t) => t.name).join(', ')} (gives up after ${Math.round(timeoutMs / 1000)} s, or at once on a tier that is down)\n`);
      }
      const report = await layered.drain({ timeoutMs });
      const rows = layered.writable().map((t) => [t.name, report.pending[t.name] ?? 0, report.failed[t.name] ?? 0]);
      if (flags.json) io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else {
        printRows(io, false, ['tier', 'pending', 'set aside'], rows, null);
        io.stderr.write(
          `cascache: sent ${report.stats.records} record(s): ${formatBytes(report.stats.bytesSent)} in ${report.stats.packs} pack(s); ` +
            `${report.stats.blobsDeduplicated} blobs (${formatBytes(report.stats.bytesDeduplicated)}) were already there\n`,
        );
        for (const [tier, why] of Object.entries(report.unreachable)) io.stderr.write(`cascache: ${tier} is unreachable (${why}); its uploads stay journaled\n`);
        for (const t of layered.writable()) {
          if (!report.failed[t.name]) continue;
          const reasons = await journal.failureReasons(t.name);
          io.stderr.write(`cascache: ${report.failed[t.name]} upload(s) to ${t.name} set aside after permanent errors (${reasons.slice(0, 3).join('; ')}); fix the cause, then \`cascache flush --retry-set-aside\`\n`);
        }
      }
      if (!report.drained) setExitCode(ExitCodes.UNAVAILABLE);
    } finally {
      await layered.close();
    }
  });
}

/**
 * `cascache verify`: re-hash every blob, check every action-cache entry and root; corrupt blobs are
 * quarantined. Exit 0 when nothing is wrong, 6 (integrity) when something is.
 */
import type { Command } from 'commander';
import { ErrorCodes, isCascacheError, verifyStore } from '@cascache/core';
import { formatBytes, openExistingCliStore, printRows, withStoreFlags, type StoreFlags } from '../context';
import { ExitCodes } from '../exit-codes';
import type { Io } from '../program';

export function registerVerify(program: Command, io: Io, setExitCode: (code: number) => void): void {
  withStoreFlags(
    program
      .command('verify')
      .description('Re-hash every blob and check every cache entry and root; quarantine corruption')
      .option('--rebuild-index', 'rebuild the SQLite index from the files (it is a cache of them)')
      .option('--repair', 'also drop cache entries and roots that can never be served (their outputs are stored again by the next upload)'),
  ).action(async (flags: StoreFlags & { rebuildIndex?: boolean; repair?: boolean }) => {
    const s = await openExistingCliStore(flags, io);
    // The index is a cache of the files: rebuilt when asked, or when it is lost or cannot be trusted.
    if (!s.index && flags.rebuildIndex) io.stderr.write('cascache: warning: the store index (SQLite) could not be opened, so it was not rebuilt\n');
    const reason = s.index?.staleReason();
    if (s.index && (flags.rebuildIndex || reason)) {
      try {
        const counts = await s.index.rebuild(s);
        if (!flags.json) io.stderr.write(`cascache: rebuilt the store index from the files${reason ? `, because ${reason}` : ''}: ${counts.blobs} blobs, ${counts.entries} cache entries, ${counts.roots} roots\n`);
      } catch (err) {
        // A full disk: the files can still be checked, and they are what verify checks.
        if (!isCascacheError(err, ErrorCodes.IO)) throw err;
        io.stderr.write(`cascache: warning: ${err.message}; verifying the files without it (it is rebuilt next time)\n`);
      }
    }
    const tty = (io.stderr as NodeJS.WriteStream).isTTY === true;
    const report = await verifyStore(s, {
      repair: flags.repair,
      onProgress: tty ? (step, done) => done % 500 === 0 && io.stderr.write(`\rcascache: verifying ${step}: ${done}`) : undefined,
    });
    if (tty) io.stderr.write('\r\x1b[K');
    if (flags.json) io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else {
      io.stdout.write(`checked ${report.blobs} blobs (${formatBytes(report.storedBytes)}), ${report.acEntries} cache entries, ${report.roots} roots in ${((report.timings.blobs + report.timings.acEntries + report.timings.roots) / 1000).toFixed(1)} s\n`);
      if (report.problems.length === 0) io.stdout.write('no problems found\n');
      else {
        const head = flags.repair ? ['what', 'id', 'problem', 'detail', 'done'] : ['what', 'id', 'problem', 'detail'];
        const row = (p: (typeof report.problems)[number]) => [p.kind, p.id.length > 40 ? `${p.id.slice(0, 40)}…` : p.id, p.reason, p.detail ?? '', ...(flags.repair ? [p.repaired ?? 'kept'] : [])];
        printRows(io, false, head, report.problems.map(row), report);
        const unsigned = report.problems.filter((p) => p.reason === 'bad-signature').length;
        if (unsigned > 0) io.stderr.write(`cascache: ${unsigned} entr${unsigned === 1 ? 'y does' : 'ies do'} not verify with this CASCACHE_SECRET (written without it, with another secret, or altered); they are kept (a wrong secret must not empty the store) and replaced as their tasks upload again\n`);
        if (!flags.repair) io.stderr.write('cascache: `cascache verify --repair` drops what can never be served\n');
      }
    }
    // With --repair, what was repaired is no longer wrong: exit 0 unless something is left.
    if (report.problems.some((p) => !p.repaired)) setExitCode(ExitCodes.INTEGRITY);
  });
}

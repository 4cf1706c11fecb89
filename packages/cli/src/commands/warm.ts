/**
 * `cascache warm`: the agent's pre-run prefetch as a command, for CI jobs and tools without a plugin.
 * Finds the most relevant run shared on the remote tiers (an exact `--run`, else the newest run of
 * each `--branch` in order, preferring one of `--commit`; by default the current git branch, then
 * nx.json's `defaultBase` or `main`) and fetches every entry it lists into the local store, with a
 * progress bar at a terminal and a summary (entries, bytes fetched, time). Exit 0 when warmed, 3
 * (miss) when no run was found, 2 without a remote tier or secret.
 */
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { CascacheError, defaultBranch, ErrorCodes, findRun, gitState, prefetchRun } from '@cascache/core';
import { formatBytes, openCliStore, withStoreFlags, type StoreFlags } from '../context';
import { ExitCodes } from '../exit-codes';
import type { Io } from '../program';

interface WarmFlags extends StoreFlags {
  tool: string;
  branch?: string[];
  commit?: string;
  run?: string;
  concurrency: number;
}

export function registerWarm(program: Command, io: Io, setExitCode: (code: number) => void): void {
  withStoreFlags(
    program
      .command('warm')
      .description('Fetch what the most relevant earlier run produced (shared on the remote tiers) into the local store')
      .option('--tool <name>', 'whose runs: nx or turbo', 'nx')
      .option('--branch <name>', 'a branch whose newest run to fetch; repeat to give fallbacks in order (default: the git branch, then the default branch)', (v: string, prev: string[] = []) => [...prev, v])
      .option('--commit <sha>', 'prefer a run of this commit (40 hex digits)')
      .option('--run <key>', 'an exact run record, as a previous warm printed it')
      .option('--concurrency <n>', 'entries fetched at once', (v) => Number(v), 8),
  ).action(async (flags: WarmFlags) => {
    if (flags.commit !== undefined && !/^[0-9a-f]{40}$/.test(flags.commit)) throw new CascacheError(ErrorCodes.CONFIG, `--commit must be 40 hex digits, got ${JSON.stringify(flags.commit)}`);
    if (!Number.isInteger(flags.concurrency) || flags.concurrency < 1 || flags.concurrency > 64) throw new CascacheError(ErrorCodes.CONFIG, '--concurrency must be 1-64');
    const s = await openCliStore(flags, io);
    if (!s.layered) throw new CascacheError(ErrorCodes.CONFIG, 'cascache warm needs a remote tier (--remote, CASCACHE_REMOTE or CASCACHE_TIERS) and CASCACHE_SECRET');
    const git = gitState(process.cwd(), process.env);
    const branches = flags.branch?.length ? flags.branch : [...new Set([git.branch, defaultBranch(undefined, process.cwd())])];
    const commit = flags.commit ?? (flags.branch?.length ? undefined : (git.commit ?? undefined));
    const found = await findRun(s.layered, { tool: flags.tool, branches, commit, runKey: flags.run });
    if (!found) {
      if (flags.json) io.stdout.write(`${JSON.stringify({ run: null })}\n`);
      else io.stderr.write(`cascache: no ${flags.tool} run on ${flags.run ?? branches.map((b) => b ?? '(no branch)').join(', ')} in the remote tiers; nothing to warm\n`);
      setExitCode(ExitCodes.MISS);
      return;
    }
    const r = found.run;
    const tty = !flags.json && (io.stderr as NodeJS.WriteStream).isTTY === true;
    const bar = tty ? new SingleBar({ stream: io.stderr as NodeJS.WriteStream, format: 'cascache: warming [{bar}] {value}/{total} entries, {bytes}', hideCursor: true, clearOnComplete: true }) : null;
    bar?.start(r.keys.length, 0, { bytes: formatBytes(0) });
    const report = await prefetchRun(s.layered, found, { concurrency: flags.concurrency, onProgress: (done, _total, bytes) => bar?.update(done, { bytes: formatBytes(bytes) }) });
    bar?.stop();
    if (flags.json) {
      io.stdout.write(`${JSON.stringify({ ...report, run: { tier: found.tier, key: found.key, tool: r.tool, branch: r.branch, commit: r.commit, startTime: r.startTime, targets: r.targets } }, null, 2)}\n`);
    } else {
      io.stderr.write(
        `cascache: warmed from ${found.key} (${r.tool} ${r.targets.join(',') || 'run'} on ${r.branch ?? 'no branch'}${r.commit ? ` at ${r.commit.slice(0, 10)}` : ''}, ${new Date(r.startTime).toISOString()}): ` +
          `${report.entries} entries, ${report.fetched} fetched, ${report.local} already here, ${report.missing} missing; ` +
          `${formatBytes(report.bytes)} in ${report.blobs} chunks, ${(report.ms / 1000).toFixed(1)} s\n`,
      );
    }
  });
}

/**
 * `cascache stats`: the whole store (sizes, dedup, compression) and what each tool got from it:
 * Nx runs recorded by the plugin (hits, misses, time the hits saved: the original duration of each
 * task served from cascache) and `cascache cache get` hits and misses, then the most recent runs and
 * the tasks that missed most.
 * Everything is read from the store's SQLite index.
 */
import type { Command } from 'commander';
import { CascacheError, ErrorCodes, storeReport } from '@cascache/core';
import { currentStats, formatAge, formatBytes, openExistingCliStore, printRows, withStoreFlags, type StoreFlags } from '../context';
import type { Io } from '../program';

const seconds = (ms: number | null): string => (ms === null ? '-' : `${(ms / 1000).toFixed(1)} s`);

function parseCount(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new CascacheError(ErrorCodes.CONFIG, `--runs takes a whole number, not ${v}`);
  return n;
}

export function registerStats(program: Command, io: Io): void {
  withStoreFlags(
    program
      .command('stats')
      .description('The whole store, what each tool (Nx, cascache cache) got from it, and the latest runs')
      .option('--runs <n>', 'how many of the latest runs to list (0 for none)', parseCount, 10),
  ).action(async (flags: StoreFlags & { runs: number }) => {
    const s = await openExistingCliStore(flags, io);
    const { index, stats } = await currentStats(s, io, flags);
    const { store, tools, runs, topMisses } = storeReport(index, stats, { runs: flags.runs, topMisses: 10 });
    if (flags.json) {
      io.stdout.write(`${JSON.stringify({ store, tools, runs, topMisses }, null, 2)}\n`);
      return;
    }
    printRows(
      io,
      false,
      ['blobs', 'stored', 'unique raw', 'logical', 'dedup', 'compression', 'avg chunk', 'cache entries', 'roots'],
      [[store.blobs, formatBytes(store.storedBytes), formatBytes(store.uniqueBytes), formatBytes(store.logicalBytes), `${store.dedupRatio}x`, `${store.compressionRatio}x`, formatBytes(store.avgChunkBytes), store.acEntries, store.roots]],
      null,
    );
    printRows(
      io,
      false,
      ['tool', 'runs', 'hits', "tool's own cache", 'misses', 'hit rate', 'task time saved'],
      tools.map((t) => [t.tool, t.runs, t.hits, t.localHits, t.misses, `${(t.hitRate * 100).toFixed(1)}%`, seconds(t.savedMs)]),
      null,
    );
    if (runs.length > 0) {
      printRows(
        io,
        false,
        ['latest runs', 'started', 'took', 'tasks', 'hits', "tool's own cache", 'misses', 'task time saved'],
        runs.map((r) => [r.tool, formatAge(r.startTime), seconds(r.durationMs), r.tasks, r.hits, r.localHits, r.misses, seconds(r.savedMs)]),
        null,
      );
    }
    if (topMisses.length > 0) {
      printRows(
        io,
        false,
        ['misses most', 'tool', 'misses', 'of lookups', 'last miss'],
        topMisses.map((t) => [t.task, t.tool, t.misses, t.lookups, formatAge(t.lastMiss)]),
        null,
      );
    }
  });
}

/**
 * `cascache stats`: the whole store (sizes, dedup, compression) and what each tool got from it:
 * Nx runs recorded by the plugin (hits, misses, time the hits saved: the original duration of each
 * task served from cascache) and `cascache cache get` hits and misses. Everything is read from the
 * store's SQLite index.
 */
import type { Command } from 'commander';
import { storeStats, type ToolStats } from '@cascache/core';
import { currentIndex, formatBytes, openCliStore, printRows, withStoreFlags, type StoreFlags } from '../context';
import type { Io } from '../program';
import { CLI_TOOL } from './cache';

/** The tools always shown, with zeros before their first run. */
const TOOLS = ['nx', CLI_TOOL];

export function registerStats(program: Command, io: Io): void {
  withStoreFlags(program.command('stats').description('The whole store, and what each tool (Nx, cascache cache) got from it')).action(async (flags: StoreFlags) => {
    const s = await openCliStore(flags, io);
    const recorded = (await currentIndex(s, io, flags))?.toolStats() ?? [];
    const store = await storeStats(s);
    const tools: ToolStats[] = [
      ...TOOLS.map((tool) => recorded.find((t) => t.tool === tool) ?? { tool, runs: 0, hits: 0, misses: 0, hitRate: 0, savedMs: tool === 'nx' ? 0 : null }),
      ...recorded.filter((t) => !TOOLS.includes(t.tool)),
    ];
    if (flags.json) {
      io.stdout.write(`${JSON.stringify({ store, tools }, null, 2)}\n`);
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
      ['tool', 'runs', 'hits', 'misses', 'hit rate', 'time saved'],
      tools.map((t) => [t.tool, t.runs, t.hits, t.misses, `${(t.hitRate * 100).toFixed(1)}%`, t.savedMs === null ? '-' : `${(t.savedMs / 1000).toFixed(1)} s`]),
      null,
    );
  });
}

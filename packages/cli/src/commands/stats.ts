/**
 * `cascache stats`: the whole store (sizes, dedup, compression) and what each tool got from it:
 * Nx runs recorded by the plugin (hits, misses, time the hits saved: the original duration of each
 * task served from cascache) and `cascache cache get` hits and misses.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { storeStats, type LocalStore } from '@cascache/core';
import { formatBytes, hitRate, openCliStore, printRows, withStoreFlags, type StoreFlags } from '../context';
import type { Io } from '../program';
import { readEvents } from './cache';

interface RunTask {
  hash?: string;
  status: string;
  ms?: number;
}

export interface ToolStats {
  tool: string;
  runs: number;
  hits: number;
  misses: number;
  hitRate: number;
  /** Sum of the original durations of tasks served from the cache, ms (Nx only). */
  savedMs: number | null;
}

async function nxStats(s: LocalStore): Promise<ToolStats> {
  const dir = join(s.root, 'v1', 'runs');
  let names: string[] = [];
  try {
    names = (await fsp.readdir(dir)).filter((n) => n.endsWith('.json')).sort();
  } catch {
    /* no runs yet */
  }
  const runs: Array<{ tasks: RunTask[] }> = [];
  for (const n of names) {
    try {
      const r = JSON.parse(await fsp.readFile(join(dir, n), 'utf8')) as { tool?: string; tasks?: RunTask[] };
      if (r.tool === 'nx' && Array.isArray(r.tasks)) runs.push({ tasks: r.tasks });
    } catch {
      /* a damaged record is skipped */
    }
  }
  // The duration of a task when it really ran, by hash: what a later hit of that hash saved.
  const built = new Map<string, number>();
  for (const r of runs) for (const t of r.tasks) if (t.status === 'success' && t.hash && t.ms !== undefined) built.set(t.hash, t.ms);
  let hits = 0;
  let misses = 0;
  let savedMs = 0;
  for (const r of runs) {
    for (const t of r.tasks) {
      if (t.status === 'remote-cache') {
        hits++;
        savedMs += (t.hash && built.get(t.hash)) || 0;
      } else if (t.status === 'success' || t.status === 'failure') misses++;
    }
  }
  return { tool: 'nx', runs: runs.length, hits, misses, hitRate: hitRate(hits, misses), savedMs };
}

export function registerStats(program: Command, io: Io): void {
  withStoreFlags(program.command('stats').description('The whole store, and what each tool (Nx, cascache cache) got from it')).action(async (flags: StoreFlags) => {
    const s = await openCliStore(flags, io);
    const store = await storeStats(s);
    const cli = await readEvents(s);
    const tools: ToolStats[] = [await nxStats(s), { tool: 'cascache cache', runs: cli.hits + cli.misses, hits: cli.hits, misses: cli.misses, hitRate: hitRate(cli.hits, cli.misses), savedMs: null }];
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

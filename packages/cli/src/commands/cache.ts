/**
 * `cascache cache build|get|invalidate|list`: build outputs of components cached under an action
 * key of their version, build target, dependencies and input files (see cache-key.ts).
 *
 * Each entry is an action-cache entry (signed when CASCACHE_SECRET is set) plus a small record under
 * `<store>/v1/cli-cache/<key>.json` naming the component, for `list` and `invalidate`. Each `get` is
 * recorded as a run (`<store>/v1/runs/`) of tool `cascache cache`, for hit rates and last hits.
 */
import { promises as fsp } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { isDigest, recordRun, writeFileAtomic, type LocalStore } from '@cascache/core';
import { computeCacheKey, type KeyExplanation } from '../cache-key';
import { currentIndex, currentStats, formatAge, formatBytes, ingestWithProgress, openCliStore, printRows, restoreBeside, withStoreFlags, type StoreFlags } from '../context';
import { ExitCodes } from '../exit-codes';
import type { Io } from '../program';

const NAMESPACE = 'cli';

interface EntryRecord {
  key: string;
  component: string;
  version: string;
  task: string;
  size: number;
  created: number;
}

interface KeyFlags extends StoreFlags {
  dir: string;
  task: string;
  version?: string;
  dep?: string[];
  inputs?: string[];
  outputs?: string[];
  explain?: boolean;
}

function recordsDir(s: LocalStore): string {
  return join(s.root, 'v1', 'cli-cache');
}

async function writeRecord(s: LocalStore, r: EntryRecord): Promise<void> {
  await writeFileAtomic(join(recordsDir(s), `${r.key}.json`), `${JSON.stringify(r)}\n`);
}

/**
 * Where a component's outputs were written before, per component, as directories relative to its
 * `--dir`: `<store>/v1/cli-cache/outputs.json`, `{ "<component>": ["dist", ...] }`. Outside git,
 * an earlier build's `--source` that is still on disk must not count as an input of a later get
 * into another `--target` (or the key would depend on where outputs were restored).
 */
function outputsFile(s: LocalStore): string {
  return join(recordsDir(s), 'outputs.json');
}

async function readOutputs(s: LocalStore): Promise<Record<string, string[]>> {
  try {
    const v = JSON.parse(await fsp.readFile(outputsFile(s), 'utf8')) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, string[]>) : {};
  } catch {
    return {};
  }
}

/** The component's output directories: this command's, `--outputs`, and those recorded before, as absolute paths. */
async function outputDirs(s: LocalStore, component: string, flags: KeyFlags, own: string): Promise<string[]> {
  const recorded = (await readOutputs(s))[component];
  const dir = resolve(flags.dir);
  return [own, ...(flags.outputs ?? []), ...(Array.isArray(recorded) ? recorded.filter((d) => typeof d === 'string').map((d) => resolve(dir, d)) : [])].map((d) => resolve(d));
}

/** Remembers the output directories inside the component (best-effort: a lost record only matters outside git). */
async function recordOutputs(s: LocalStore, component: string, dirs: string[]): Promise<void> {
  try {
    const all = await readOutputs(s);
    const known = new Set(Array.isArray(all[component]) ? all[component] : []);
    const before = known.size;
    for (const d of dirs) if (d !== '' && !d.startsWith('..') && !isAbsolute(d)) known.add(d);
    if (known.size === before) return;
    all[component] = [...known].sort();
    await writeFileAtomic(outputsFile(s), `${JSON.stringify(all)}\n`);
  } catch {
    /* see above */
  }
}

async function readRecords(s: LocalStore): Promise<EntryRecord[]> {
  let names: string[] = [];
  try {
    names = await fsp.readdir(recordsDir(s));
  } catch {
    return [];
  }
  const out: EntryRecord[] = [];
  for (const n of names) {
    if (!n.endsWith('.json') || !isDigest(n.slice(0, -5))) continue;
    try {
      out.push(JSON.parse(await fsp.readFile(join(recordsDir(s), n), 'utf8')) as EntryRecord);
    } catch {
      /* a damaged record only hides the entry from list */
    }
  }
  return out.sort((a, b) => b.created - a.created);
}

/** The tool name under which `cache get` lookups are recorded as runs (see `cascache stats`). */
export const CLI_TOOL = 'cascache cache';

/** Records a lookup as a one-task run for the index; statistics never fail a restore. */
async function recordLookup(s: LocalStore, component: string, key: string, hit: boolean, startTime: number): Promise<void> {
  try {
    await recordRun(s.root, { tool: CLI_TOOL, startTime, endTime: Date.now(), tasks: [{ id: component, hash: key, status: hit ? 'hit' : 'miss' }] });
  } catch {
    /* see above */
  }
}

function keyOptions(cmd: Command): Command {
  return withStoreFlags(cmd)
    .option('--dir <path>', "the component's directory (package.json, inputs)", '.')
    .option('--task <name>', 'build target name', 'build')
    .option('--version <version>', 'component version (default: its package.json)')
    .option('--dep <name@version>', 'a dependency version, repeatable (default: package.json dependencies)', (v: string, acc: string[] = []) => [...acc, v])
    .option('--inputs <glob...>', 'input files, relative to --dir (default: what git would commit; outside git, every file but node_modules, .git and the outputs)')
    .option('--outputs <dir...>', "the component's output directories, never inputs (--source, --target and earlier ones count too)")
    .option('--explain', 'print every ingredient of the key with its digest, and the rule that picked each input');
}

function explain(io: Io, e: KeyExplanation): void {
  const lines = [
    `key        ${e.key}`,
    `component  ${e.component}`,
    `version    ${e.version}`,
    `task       ${e.task}`,
    `deps       ${e.depsDigest}  (${e.deps.length}: ${e.deps.join(', ') || 'none'})`,
    `inputs     ${e.inputsDigest}  (${e.inputs.length} files)`,
    ...e.inputs.map((i) => `  ${i.digest}  ${i.path}  (${i.rule})`),
    `outputs    ${e.outputs.join(', ') || 'none inside the component'}  (never inputs)`,
  ];
  io.stderr.write(`${lines.join('\n')}\n`);
}

export function registerCache(program: Command, io: Io, setExitCode: (code: number) => void): void {
  const cache = program.command('cache').description('Build outputs cached by component, version, target, dependencies and inputs');

  keyOptions(cache.command('build').description("Store a component's build output under its action key").argument('<component>', 'component name'))
    .requiredOption('--source <dir>', 'the build output directory to store')
    .option('--target <name>', 'alias of --task')
    .action(async (component: string, flags: KeyFlags & { source: string; target?: string }) => {
      const s = await openCliStore(flags, io);
      const e = await computeCacheKey({ component, dir: flags.dir, task: flags.target ?? flags.task, version: flags.version, deps: flags.dep, inputs: flags.inputs, exclude: await outputDirs(s, component, flags, flags.source) });
      if (flags.explain) explain(io, e);
      await recordOutputs(s, component, e.outputs);
      const r = await ingestWithProgress(io, flags, s, flags.source, `storing ${component}`);
      const put = await s.actionCache.put(NAMESPACE, e.key, { manifest: r.digest, size: r.logicalBytes, writer: 'cascache-cli' });
      await writeRecord(s, { key: e.key, component, version: e.version, task: e.task, size: r.logicalBytes, created: put.entry.created });
      const before = s.layered ? { ...s.layered.stats } : null;
      await s.layered?.recordUpload({ kind: 'ac', namespace: NAMESPACE, key: e.key });
      const remote = s.layered && before ? { uploadedBytes: s.layered.stats.bytesSent - before.bytesSent, dedupBytes: s.layered.stats.bytesDeduplicated - before.bytesDeduplicated } : undefined;
      const result = { key: e.key, component, created: put.created, files: r.files, logicalBytes: r.logicalBytes, newBytes: r.newBytes, dedupBytes: r.dedupBytes, remote };
      if (flags.json) io.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      else {
        io.stdout.write(`${e.key}\n`);
        io.stderr.write(`cascache: ${put.created ? 'stored' : 'already stored'} ${component} ${e.version} (${e.task}): ${r.files} files, ${formatBytes(r.logicalBytes)}; ${formatBytes(r.newBytes)} new, ${formatBytes(r.dedupBytes)} deduplicated\n`);
        if (remote) io.stderr.write(`cascache: remote: uploaded ${formatBytes(remote.uploadedBytes)}, ${formatBytes(remote.dedupBytes)} already there\n`);
      }
    });

  keyOptions(cache.command('get').description("Restore a component's build output; exit 3 on a miss").argument('<component>', 'component name'))
    .requiredOption('--target <dir>', 'directory to restore into (restored beside it, then moved into place)')
    .option('--force', 'replace a non-empty target')
    .action(async (component: string, flags: KeyFlags & { target: string; force?: boolean }) => {
      const startTime = Date.now();
      const s = await openCliStore(flags, io);
      const e = await computeCacheKey({ component, dir: flags.dir, task: flags.task, version: flags.version, deps: flags.dep, inputs: flags.inputs, exclude: await outputDirs(s, component, flags, flags.target) });
      if (flags.explain) explain(io, e);
      const hit = s.layered ? await s.layered.lookup(NAMESPACE, e.key) : await s.actionCache.get(NAMESPACE, e.key);
      await recordLookup(s, component, e.key, hit !== null, startTime);
      if (!hit) {
        if (flags.json) io.stdout.write(`${JSON.stringify({ key: e.key, hit: false })}\n`);
        else io.stderr.write(`cascache: miss for ${component} ${e.version} (${e.task}), key ${e.key.slice(0, 16)}\n`);
        setExitCode(ExitCodes.MISS);
        return;
      }
      await restoreBeside(s, hit.entry.manifest, flags.target, flags.force === true);
      await recordOutputs(s, component, e.outputs);
      if (flags.json) io.stdout.write(`${JSON.stringify({ key: e.key, hit: true, target: flags.target, size: hit.entry.size })}\n`);
      else io.stderr.write(`cascache: restored ${component} ${e.version} (${e.task}) into ${flags.target}, ${formatBytes(hit.entry.size)}\n`);
    });

  withStoreFlags(
    cache
      .command('invalidate')
      .description('Remove cache entries of one component, or all')
      .option('--component <name>', 'the component whose entries go')
      .option('--all', 'remove every entry'),
  ).action(async (flags: StoreFlags & { component?: string; all?: boolean }) => {
    if (!flags.component === !flags.all) {
      io.stderr.write('cascache: give exactly one of --component <name> or --all\n');
      setExitCode(ExitCodes.USAGE);
      return;
    }
    const s = await openCliStore(flags, io);
    let removed = 0;
    for (const r of await readRecords(s)) {
      if (!flags.all && r.component !== flags.component) continue;
      await s.actionCache.delete(NAMESPACE, r.key);
      await fsp.rm(join(recordsDir(s), `${r.key}.json`), { force: true });
      removed++;
    }
    if (flags.json) io.stdout.write(`${JSON.stringify({ removed })}\n`);
    else io.stderr.write(`cascache: removed ${removed} entr${removed === 1 ? 'y' : 'ies'} (data goes at the next gc)\n`);
  });

  withStoreFlags(cache.command('list').description('List cache entries, newest first')).action(async (flags: StoreFlags) => {
    const s = await openCliStore(flags, io);
    const lastHit = (await currentIndex(s, io, flags))?.lastHits(CLI_TOOL) ?? new Map<string, number>();
    const records = (await readRecords(s)).map((r) => ({ ...r, lastHit: lastHit.get(r.key) ?? null }));
    printRows(
      io,
      flags.json,
      ['component', 'version', 'task', 'key', 'size', 'age', 'last hit'],
      records.map((r) => [r.component, r.version, r.task, r.key.slice(0, 16), formatBytes(r.size), formatAge(r.created), r.lastHit ? formatAge(r.lastHit) : 'never']),
      records,
    );
  });

  withStoreFlags(cache.command('stats').description('Entries, sizes, dedup and compression ratios, hit rate')).action(async (flags: StoreFlags) => {
    const s = await openCliStore(flags, io);
    const records = await readRecords(s);
    const { index, stats: store } = await currentStats(s, io, flags);
    const { hits, misses, hitRate } = index?.toolStats().find((t) => t.tool === CLI_TOOL) ?? { hits: 0, misses: 0, hitRate: 0 };
    const stats = {
      entries: records.length,
      logicalBytes: records.reduce((a, r) => a + r.size, 0),
      storedBytes: store.storedBytes,
      dedupRatio: store.dedupRatio,
      compressionRatio: store.compressionRatio,
      avgChunkBytes: store.avgChunkBytes,
      hits,
      misses,
      hitRate,
    };
    printRows(
      io,
      flags.json,
      ['entries', 'logical', 'stored (whole store)', 'dedup', 'compression', 'avg chunk', 'hits', 'misses', 'hit rate'],
      [[stats.entries, formatBytes(stats.logicalBytes), formatBytes(stats.storedBytes), `${stats.dedupRatio}x`, `${stats.compressionRatio}x`, formatBytes(stats.avgChunkBytes), hits, misses, `${(stats.hitRate * 100).toFixed(1)}%`]],
      stats,
    );
  });
}

import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from './support/run-cli';

describe('cascache cache stats and cascache stats', () => {
  let dir: string;
  let s: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cascache-stats-'));
    s = join(dir, 'store');
    mkdirSync(join(dir, 'dist'), { recursive: true });
    writeFileSync(join(dir, 'dist/a.js'), 'export const a = 1;\n'.repeat(2000));
    writeFileSync(join(dir, 'dist/b.js'), 'export const a = 1;\n'.repeat(2000)); // same content: deduplicated
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const key = (): string[] => ['--dir', dir, '--version', '1.0.0', '--inputs', 'none', '--store-dir', s];

  it('refuses to report on a directory that holds no store, instead of creating an empty one there', async () => {
    const sub = join(dir, 'dist');
    for (const args of [['stats'], ['verify'], ['gc'], ['store', 'list'], ['evict', '--to-size', '1GiB']]) {
      const r = await cli(...args, '--store-dir', join(sub, '.cascache'));
      expect({ args, code: r.code, err: r.stderr.trim() }).toEqual({
        args,
        code: 4,
        err: `cascache: no cascache store at ${join(sub, '.cascache')}: run this from the workspace root, or name the store with --store-dir or CASCACHE_DIR (E_NOT_FOUND)`,
      });
    }
    expect(existsSync(join(sub, '.cascache'))).toBe(false);
  });

  it('cache stats reports entries, ratios, hits, misses and hit rate', async () => {
    expect((await cli('cache', 'build', 'web', '--source', join(dir, 'dist'), ...key())).code).toBe(0);
    rmSync(join(dir, 'dist'), { recursive: true });
    expect((await cli('cache', 'get', 'web', '--target', join(dir, 'dist'), ...key())).code).toBe(0);
    expect((await cli('cache', 'get', 'api', '--target', join(dir, 'api-dist'), ...key())).code).toBe(3);
    const st = JSON.parse((await cli('cache', 'stats', '--store-dir', s, '--json')).stdout);
    expect(st).toMatchObject({ entries: 1, logicalBytes: 80_000, hits: 1, misses: 1, hitRate: 0.5 });
    expect(st.dedupRatio).toBeGreaterThan(1.9); // two identical files stored once (plus a small manifest)
    expect(st.compressionRatio).toBeGreaterThan(5); // repetitive text, zstd
    expect(st.avgChunkBytes).toBeGreaterThan(0);
    const list = JSON.parse((await cli('cache', 'list', '--store-dir', s, '--json')).stdout);
    expect(list[0].lastHit).toEqual(expect.any(Number));

    // The index is a cache of the files: losing it loses none of these figures.
    for (const suffix of ['', '-wal', '-shm']) rmSync(join(s, 'v1', `index.sqlite${suffix}`), { force: true });
    const again = await cli('cache', 'stats', '--store-dir', s);
    expect(again.stderr).toContain('rebuilt the store index from the files, because it was never built');
    expect(JSON.parse((await cli('cache', 'stats', '--store-dir', s, '--json')).stdout)).toEqual(st);
    expect(JSON.parse((await cli('cache', 'list', '--store-dir', s, '--json')).stdout)).toEqual(list);
  });

  it('stats credits Nx hits with the time the original build took', async () => {
    expect((await cli('cache', 'build', 'web', '--source', join(dir, 'dist'), ...key())).code).toBe(0); // a store, as an agent's
    const runs = join(s, 'v1', 'runs');
    mkdirSync(runs, { recursive: true });
    writeFileSync(join(runs, '1000-1.json'), JSON.stringify({ tool: 'nx', startTime: 1000, endTime: 7000, tasks: [{ hash: '11', status: 'success', ms: 4000 }, { hash: '22', status: 'success', ms: 1500 }] }));
    writeFileSync(join(runs, '2000-1.json'), JSON.stringify({ tool: 'nx', startTime: 20_000, endTime: 21_200, tasks: [{ hash: '11', status: 'remote-cache', ms: 30 }, { hash: '33', status: 'success', ms: 900 }] }));
    const st = JSON.parse((await cli('stats', '--store-dir', s, '--json')).stdout);
    expect(st.tools[0]).toEqual({ tool: 'nx', runs: 2, hits: 1, localHits: 0, misses: 3, hitRate: 0.25, savedMs: 4000 });
    expect(st.runs).toEqual([
      { tool: 'nx', startTime: 20_000, durationMs: 1200, tasks: 2, hits: 1, localHits: 0, misses: 1, savedMs: 4000 },
      { tool: 'nx', startTime: 1000, durationMs: 6000, tasks: 2, hits: 0, localHits: 0, misses: 2, savedMs: 0 },
    ]);
    expect(JSON.parse((await cli('stats', '--runs', '1', '--store-dir', s, '--json')).stdout).runs).toHaveLength(1);
    const human = await cli('stats', '--store-dir', s);
    expect(human.stdout).toContain('4.0 s');
    expect(human.stdout).toContain('25.0%');
    expect(human.stdout).toMatch(/latest runs.*\n(.*\n)*.*nx.*1\.2 s.*4\.0 s/);
    expect((await cli('stats', '--runs', 'many', '--store-dir', s)).code).toBe(2);
  });
});

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { computeCacheKey } from '../src/cache-key';
import { ExitCodes } from '../src';
import { cli } from './support/run-cli';

describe('cascache cache build|get|invalidate|list', () => {
  let dir: string;
  let comp: string;
  let s: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cascache-cache-cli-'));
    comp = join(dir, 'ui');
    s = join(dir, 'store');
    mkdirSync(join(comp, 'src'), { recursive: true });
    mkdirSync(join(comp, 'dist'), { recursive: true });
    mkdirSync(join(comp, 'node_modules/x'), { recursive: true });
    writeFileSync(join(comp, 'package.json'), JSON.stringify({ name: 'ui', version: '1.2.3', dependencies: { react: '^18.2.0' } }));
    writeFileSync(join(comp, 'src/index.ts'), 'export const a = 1;\n');
    writeFileSync(join(comp, 'node_modules/x/index.js'), 'ignored');
    writeFileSync(join(comp, 'dist/index.js'), 'exports.a = 1;\n'.repeat(500));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const build = (...extra: string[]) => cli('cache', 'build', 'ui', '--dir', comp, '--source', join(comp, 'dist'), '--store-dir', s, ...extra);
  /** Makes `dir` a git work tree with everything committed and dist/ (the output) ignored. */
  const commitAll = () => {
    const git = (...args: string[]) => execFileSync('git', ['-c', 'user.email=t@cascache.invalid', '-c', 'user.name=t', ...args], { cwd: dir, stdio: 'ignore' });
    writeFileSync(join(dir, '.gitignore'), 'dist/\nstore/\n');
    git('init', '-q');
    git('add', '-A');
    git('commit', '-qm', 'init');
  };
  const get = (target: string, ...extra: string[]) => cli('cache', 'get', 'ui', '--dir', comp, '--target', target, '--store-dir', s, ...extra);

  it('keys on version, task, dependencies and input files, not on outputs or node_modules', async () => {
    const base = await computeCacheKey({ component: 'ui', dir: comp, task: 'build', exclude: [join(comp, 'dist')] });
    expect(base).toMatchObject({ version: '1.2.3', deps: ['react@^18.2.0'], inputs: [{ path: 'package.json' }, { path: 'src/index.ts' }].map((i) => expect.objectContaining(i)) });
    writeFileSync(join(comp, 'dist/index.js'), 'changed output');
    writeFileSync(join(comp, 'node_modules/x/index.js'), 'changed dep internals');
    expect((await computeCacheKey({ component: 'ui', dir: comp, task: 'build', exclude: [join(comp, 'dist')] })).key).toBe(base.key);
    const variants = [
      { component: 'ui', dir: comp, task: 'test', exclude: [join(comp, 'dist')] },
      { component: 'ui', dir: comp, task: 'build', version: '1.2.4', exclude: [join(comp, 'dist')] },
      { component: 'ui', dir: comp, task: 'build', deps: ['react@19.0.0'], exclude: [join(comp, 'dist')] },
      { component: 'other', dir: comp, task: 'build', exclude: [join(comp, 'dist')] },
    ];
    for (const v of variants) expect((await computeCacheKey(v)).key).not.toBe(base.key);
    writeFileSync(join(comp, 'src/index.ts'), 'export const a = 2;\n');
    expect((await computeCacheKey({ component: 'ui', dir: comp, task: 'build', exclude: [join(comp, 'dist')] })).key).not.toBe(base.key);
  });

  it('builds then gets: exit 0 on a hit with identical bytes, exit 3 on a miss after an input change', async () => {
    const b = await build();
    expect(b.code).toBe(0);
    expect(b.stdout).toMatch(/^[0-9a-f]{64}\n$/);
    expect(b.stderr).toContain('stored ui 1.2.3 (build)');
    // As in CI: a fresh checkout has no dist/; get restores it (the output dir is never an input).
    rmSync(join(comp, 'dist'), { recursive: true });
    const hit = await get(join(comp, 'dist'));
    expect(hit.code).toBe(0);
    expect(readFileSync(join(comp, 'dist/index.js'), 'utf8')).toBe('exports.a = 1;\n'.repeat(500));
    writeFileSync(join(comp, 'src/index.ts'), 'export const a = 2;\n');
    const miss = await get(join(comp, 'dist'), '--force');
    expect(miss.code).toBe(ExitCodes.MISS);
    expect(miss.stderr).toContain('miss for ui 1.2.3');
  });

  it('in a git work tree, keys on what git would commit: an ignored output counts nowhere, wherever it is restored', async () => {
    commitAll();
    expect((await build()).code).toBe(0);
    // ui/dist is still there (ignored): a restore elsewhere has the same key, so it hits.
    const elsewhere = join(dir, 'elsewhere');
    expect((await get(elsewhere)).code).toBe(0);
    expect(readFileSync(join(elsewhere, 'index.js'), 'utf8')).toBe('exports.a = 1;\n'.repeat(500));
    // A new source file that git would pick up is an input even before it is committed.
    writeFileSync(join(comp, 'src/new.ts'), 'export const b = 2;\n');
    expect((await get(join(dir, 'elsewhere2'))).code).toBe(ExitCodes.MISS);
  });

  it('in a git work tree, --explain names the rule that picked each input', async () => {
    commitAll();
    writeFileSync(join(comp, 'src/new.ts'), 'export const b = 2;\n');
    const r = await build('--explain');
    expect(r.stderr).toMatch(/[0-9a-f]{64} {2}src\/index\.ts {2}\(tracked by git\)$/m);
    expect(r.stderr).toMatch(/[0-9a-f]{64} {2}src\/new\.ts {2}\(untracked, not ignored by git\)$/m);
    expect(r.stderr).not.toContain('dist/index.js');
    expect(r.stderr).toMatch(/^outputs {4}dist {2}\(never inputs\)$/m);
  });

  it('outside git, the key does not depend on where outputs were restored or on earlier outputs still on disk', async () => {
    expect((await build()).code).toBe(0);
    // ui/dist (the build's --source) is still there: a get into another directory must not count it.
    const first = await get(join(dir, 'elsewhere'), '--explain');
    expect(first.code).toBe(0);
    expect(first.stderr).toMatch(/src\/index\.ts {2}\(every file \(not a git work tree\)\)$/m);
    expect(first.stderr).not.toContain('dist/index.js');
    expect(readFileSync(join(dir, 'elsewhere', 'index.js'), 'utf8')).toBe('exports.a = 1;\n'.repeat(500));
    // A restore inside the component is an output too: a later build and get still agree.
    expect((await get(join(comp, 'out2'))).code).toBe(0);
    const again = JSON.parse((await build('--json')).stdout);
    expect(again.created).toBe(false);
    expect((await get(join(dir, 'elsewhere3'))).code).toBe(0);
    // --outputs names an output directory the store has not seen (another machine's restore).
    mkdirSync(join(comp, 'lib'));
    writeFileSync(join(comp, 'lib/x.js'), 'generated');
    expect((await get(join(dir, 'elsewhere4'), '--outputs', join(comp, 'lib'))).code).toBe(0);
    // Once declared, it stays an output; a real new input still changes the key.
    expect((await get(join(dir, 'elsewhere5'))).code).toBe(0);
    writeFileSync(join(comp, 'src/new.ts'), 'export const b = 2;\n');
    expect((await get(join(dir, 'elsewhere6'))).code).toBe(ExitCodes.MISS);
  });

  it('--explain prints every ingredient with its digest', async () => {
    const r = await build('--explain');
    expect(r.stderr).toMatch(/^key {8}[0-9a-f]{64}$/m);
    expect(r.stderr).toContain('version    1.2.3');
    expect(r.stderr).toContain('react@^18.2.0');
    expect(r.stderr).toMatch(/[0-9a-f]{64} {2}src\/index\.ts/);
  });

  it('reports new against deduplicated bytes, and a second build of the same key as already stored', async () => {
    const first = JSON.parse((await build('--json')).stdout);
    expect(first).toMatchObject({ created: true, files: 1, logicalBytes: 7500 });
    const second = JSON.parse((await build('--json')).stdout);
    expect(second).toMatchObject({ created: false, newBytes: 0, dedupBytes: 7500 });
  });

  it('lists entries and invalidates by component or all', async () => {
    await build();
    await cli('cache', 'build', 'api', '--dir', comp, '--source', join(comp, 'dist'), '--store-dir', s, '--version', '9.0.0');
    const list = JSON.parse((await cli('cache', 'list', '--store-dir', s, '--json')).stdout);
    expect(list.map((e: { component: string }) => e.component).sort()).toEqual(['api', 'ui']);
    expect((await cli('cache', 'invalidate', '--component', 'ui', '--store-dir', s)).code).toBe(0);
    rmSync(join(comp, 'dist'), { recursive: true });
    expect((await get(join(comp, 'dist'))).code).toBe(ExitCodes.MISS);
    expect(JSON.parse((await cli('cache', 'invalidate', '--all', '--store-dir', s, '--json')).stdout)).toEqual({ removed: 1 });
    expect((await cli('cache', 'invalidate', '--store-dir', s)).code).toBe(ExitCodes.USAGE);
  });

  it('refuses a malformed --dep and a component without a version', async () => {
    expect((await build('--dep', 'react')).code).toBe(ExitCodes.BAD_INPUT);
    rmSync(join(comp, 'package.json'));
    const r = await build();
    expect(r.code).toBe(ExitCodes.BAD_INPUT);
    expect(r.stderr).toContain('pass --version');
  });
});

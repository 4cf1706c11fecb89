import { chmod, mkdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { chunkLengths, digestOf } from '@cascache/core';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExitCodes } from '../src';
import { cli } from './support/run-cli';


const APP_JS = Buffer.from('console.log(1);\n'.repeat(3000));

describe('cascache store and verify on real temp dirs', () => {
  let dir: string;
  let s: string;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cascache-store-cli-'));
    s = join(dir, 'store');
    await mkdir(join(dir, 'tree/sub/empty'), { recursive: true });
    await writeFile(join(dir, 'tree/app.js'), APP_JS);
    await writeFile(join(dir, 'tree/sub/run.sh'), '#!/bin/sh\n');
    await chmod(join(dir, 'tree/sub/run.sh'), 0o755);
    await symlink('app.js', join(dir, 'tree/latest.js'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** Flips one byte of app.js's first chunk (a loose blob), found by digest as cascache cuts it. */
  async function damageFirstChunk(): Promise<void> {
    const chunk = digestOf(APP_JS.subarray(0, chunkLengths(APP_JS)[0]));
    const file = join(s, 'v1/blobs', chunk.slice(0, 2), chunk);
    const bytes = await readFile(file);
    bytes[bytes.length - 1]! ^= 0x01;
    await writeFile(file, bytes);
  }

  it('add prints the root digest; the same tree gives the same digest and stores nothing new', async () => {
    const a = await cli('store', 'add', 'v1', '--source', join(dir, 'tree'), '--store-dir', s);
    expect(a.code).toBe(0);
    expect(a.stdout).toMatch(/^[0-9a-f]{64}\n$/);
    const again = await cli('store', 'add', 'v1-again', '--source', join(dir, 'tree'), '--store-dir', s, '--json');
    const j = JSON.parse(again.stdout);
    expect(j.digest).toBe(a.stdout.trim());
    expect(j).toMatchObject({ name: 'v1-again', files: 2, newChunks: 0, newBytes: 0 });
  });

  it('query, list, stats and rm report and remove roots; --json for scripts', async () => {
    const digest = (await cli('store', 'add', 'release', '--source', join(dir, 'tree'), '--store-dir', s)).stdout.trim();
    const q = JSON.parse((await cli('store', 'query', digest, '--store-dir', s, '--json')).stdout);
    expect(q).toMatchObject({ digest, name: 'release', size: 48010, files: 2, root: true, complete: true });
    const list = await cli('store', 'list', '--store-dir', s);
    expect(list.stdout).toContain('release');
    expect(list.stdout).toContain(digest.slice(0, 16));
    expect(JSON.parse((await cli('store', 'stats', '--store-dir', s, '--json')).stdout)).toMatchObject({ roots: 1, logicalBytes: 48010 });
    expect((await cli('store', 'rm', digest, '--store-dir', s)).code).toBe(0);
    expect((await cli('store', 'rm', digest, '--store-dir', s)).code).toBe(ExitCodes.NOT_FOUND);
    expect(JSON.parse((await cli('store', 'list', '--store-dir', s, '--json')).stdout)).toEqual([]);
  });

  it('get restores byte for byte, refuses a non-empty target, and replaces it with --force', async () => {
    const digest = (await cli('store', 'add', 'x', '--source', join(dir, 'tree'), '--store-dir', s)).stdout.trim();
    const target = join(dir, 'out');
    expect((await cli('store', 'get', digest, '--target', target, '--store-dir', s)).code).toBe(0);
    expect(await readFile(join(target, 'app.js'), 'utf8')).toBe('console.log(1);\n'.repeat(3000));
    expect(await readlink(join(target, 'latest.js'))).toBe('app.js');
    await writeFile(join(target, 'app.js'), 'changed');
    const refused = await cli('store', 'get', digest, '--target', target, '--store-dir', s);
    expect(refused.code).toBe(ExitCodes.EXISTS);
    expect(await readFile(join(target, 'app.js'), 'utf8')).toBe('changed');
    expect((await cli('store', 'get', digest, '--target', target, '--store-dir', s, '--force')).code).toBe(0);
    expect(await readFile(join(target, 'app.js'), 'utf8')).toBe('console.log(1);\n'.repeat(3000));
    expect((await cli('store', 'get', 'f'.repeat(64), '--target', join(dir, 'none'), '--store-dir', s)).code).toBe(ExitCodes.NOT_FOUND);
    expect((await cli('store', 'get', 'not-a-digest', '--target', join(dir, 'none'), '--store-dir', s)).code).toBe(ExitCodes.BAD_INPUT);
  });

  it('uses CASCACHE_DIR when --store-dir is absent', async () => {
    process.env.CASCACHE_DIR = s;
    try {
      const digest = (await cli('store', 'add', 'env', '--source', join(dir, 'tree'))).stdout.trim();
      expect(JSON.parse((await cli('store', 'query', digest, '--json')).stdout).name).toBe('env');
    } finally {
      delete process.env.CASCACHE_DIR;
    }
  });

  it('verify exits 0 on a sound store and 6 after a flipped byte, naming the damage', async () => {
    await cli('store', 'add', 'x', '--source', join(dir, 'tree'), '--store-dir', s);
    const ok = await cli('verify', '--store-dir', s);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('no problems found');
    const blobs = JSON.parse((await cli('verify', '--store-dir', s, '--json')).stdout);
    expect(blobs.blobs).toBeGreaterThan(1);
    await damageFirstChunk();
    const bad = await cli('verify', '--store-dir', s);
    expect(bad.code).toBe(ExitCodes.INTEGRITY);
    expect(bad.stdout).toContain('corrupt');
    expect(bad.stdout).toContain('chunks-missing');
    expect(bad.stderr).toContain('`cascache verify --repair` drops what can never be served');
  });

  it('verify --repair drops what can never be served, keeps entries another secret signed, and the store heals', async () => {
    const saved = process.env.CASCACHE_SECRET;
    await mkdir(join(dir, 'comp'));
    await writeFile(join(dir, 'comp/index.ts'), 'export {};\n');
    const build = (name: string) => cli('cache', 'build', name, '--dir', join(dir, 'comp'), '--version', '1.0.0', '--source', join(dir, 'tree'), '--store-dir', s);
    try {
      process.env.CASCACHE_SECRET = 'verify-repair-other-secret-0123456789abcdef';
      expect((await build('foreign')).code).toBe(0); // an entry signed with another secret
      process.env.CASCACHE_SECRET = 'verify-repair-this-secret-0123456789abcdef';
      expect((await build('app')).code).toBe(0);
      expect((await cli('store', 'add', 'x', '--source', join(dir, 'tree'), '--store-dir', s)).code).toBe(0);
      // The entry, the root and the foreign entry all name this chunk.
      await damageFirstChunk();

      const repaired = await cli('verify', '--repair', '--store-dir', s, '--json');
      const problems = JSON.parse(repaired.stdout).problems as Array<{ kind: string; reason: string; repaired?: string }>;
      expect(problems.map((p) => `${p.kind} ${p.reason} ${p.repaired ?? 'kept'}`).sort()).toEqual([
        'ac-entry bad-signature kept',
        'ac-entry chunks-missing dropped',
        'blob corrupt quarantined',
        'root chunks-missing dropped',
      ]);
      expect(repaired.code).toBe(ExitCodes.INTEGRITY); // the foreign entry is left as it is
      const text = await cli('verify', '--repair', '--store-dir', s);
      expect(text.stderr).toMatch(/1 entry does not verify with this CASCACHE_SECRET \(.*\); they are kept/);
      // The next build stores the output whole again, and it restores.
      expect((await build('app')).code).toBe(0);
      const out = join(dir, 'restored');
      expect((await cli('cache', 'get', 'app', '--dir', join(dir, 'comp'), '--version', '1.0.0', '--target', out, '--store-dir', s)).code).toBe(0);
      expect(await readFile(join(out, 'app.js'))).toEqual(APP_JS);
    } finally {
      if (saved === undefined) delete process.env.CASCACHE_SECRET;
      else process.env.CASCACHE_SECRET = saved;
    }
  });
});

describe('cascache verify and the index', () => {
  let dir: string;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cascache-index-cli-'));
    await mkdir(join(dir, 'tree'), { recursive: true });
    await writeFile(join(dir, 'tree/a.js'), 'a');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('rebuilds a corrupt index from the files, and on request', async () => {
    const s = join(dir, 'store');
    await cli('store', 'add', 'x', '--source', join(dir, 'tree'), '--store-dir', s);
    const first = await cli('verify', '--store-dir', s);
    expect(first.stderr).not.toContain('rebuilt'); // kept current by `store add`
    await writeFile(join(s, 'v1', 'index.sqlite'), 'garbage'.repeat(1000));
    const second = await cli('verify', '--store-dir', s);
    expect(second.code).toBe(0);
    expect(second.stderr).toContain('rebuilt the store index from the files, because it was unreadable and was replaced: 2 blobs, 0 cache entries, 1 roots');
    const third = await cli('verify', '--rebuild-index', '--store-dir', s);
    expect(third.stderr).toContain('rebuilt the store index from the files: 2 blobs, 0 cache entries, 1 roots');
  });
});

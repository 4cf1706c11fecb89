import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExitCodes, parseAge } from '../src';
import { cli } from './support/run-cli';

describe('cascache gc and evict', () => {
  let dir: string;
  let s: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cascache-gc-cli-'));
    s = join(dir, 'store');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function tree(name: string, bytes: number): string {
    const d = join(dir, name);
    mkdirSync(d, { recursive: true });
    let text = '';
    for (let i = 0; text.length < bytes; i++) text += `${name} ${i} ${Math.sin(i)}\n`;
    writeFileSync(join(d, 'out.js'), text);
    return d;
  }
  const blobCount = (): number => readdirSync(join(s, 'v1/blobs')).reduce((n, shard) => n + readdirSync(join(s, 'v1/blobs', shard)).length, 0);

  it('parses ages', () => {
    expect(parseAge('0s')).toBe(0);
    expect(parseAge('15m')).toBe(900_000);
    expect(parseAge('30d')).toBe(2_592_000_000);
    expect(() => parseAge('soon')).toThrow();
  });

  it('gc --dry-run plans without changing anything; gc store then frees the bytes of a removed root', async () => {
    const digest = (await cli('store', 'add', 'a', '--source', tree('a', 50_000), '--store-dir', s)).stdout.trim();
    await cli('store', 'rm', digest, '--store-dir', s);
    const before = blobCount();
    const dry = await cli('gc', 'store', '--grace', '0s', '--dry-run', '--store-dir', s);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/would drop 0 cache entries and delete \d+ blobs, freeing/);
    expect(blobCount()).toBe(before);
    const real = JSON.parse((await cli('gc', 'store', '--grace', '0s', '--store-dir', s, '--json')).stdout);
    expect(real.result.deletedBlobs).toBe(before);
    expect(blobCount()).toBe(0);
  });

  it('keeps recent unreferenced blobs within the default grace period', async () => {
    const digest = (await cli('store', 'add', 'a', '--source', tree('a', 20_000), '--store-dir', s)).stdout.trim();
    await cli('store', 'rm', digest, '--store-dir', s);
    const r = await cli('gc', '--store-dir', s);
    expect(r.stdout).toContain('3 unreferenced but younger than the grace period, 1 h; --grace to change');
    expect(blobCount()).toBeGreaterThan(0);
  });

  it('gc cache --older-than drops stale entries', async () => {
    await cli('cache', 'build', 'x', '--dir', dir, '--source', tree('x', 20_000), '--version', '1.0.0', '--store-dir', s, '--inputs', 'none');
    const acDir = join(s, 'v1/ac/cli');
    for (const shard of readdirSync(acDir)) for (const f of readdirSync(join(acDir, shard))) utimesSync(join(acDir, shard, f), new Date(2020, 0, 1), new Date(2020, 0, 1));
    const r = JSON.parse((await cli('gc', 'cache', '--older-than', '30d', '--store-dir', s, '--json')).stdout);
    expect(r.result.deletedEntries).toBe(1);
    expect((await cli('cache', 'get', 'x', '--dir', dir, '--target', join(dir, 'x'), '--version', '1.0.0', '--store-dir', s, '--inputs', 'none', '--force')).code).toBe(ExitCodes.MISS);
  });

  it('evict --to-size reaches the size, keeping roots', async () => {
    const root = (await cli('store', 'add', 'keep', '--source', tree('keep', 30_000), '--store-dir', s)).stdout.trim();
    for (const c of ['c1', 'c2', 'c3']) {
      await cli('cache', 'build', c, '--dir', dir, '--source', tree(c, 80_000), '--version', '1.0.0', '--store-dir', s, '--inputs', 'none');
    }
    const stats = JSON.parse((await cli('store', 'stats', '--store-dir', s, '--json')).stdout);
    const target = Math.floor(stats.storedBytes / 2);
    const r = JSON.parse((await cli('evict', '--to-size', String(target), '--grace', '0s', '--store-dir', s, '--json')).stdout);
    expect(r.plan.entries.length).toBeGreaterThan(0);
    const after = JSON.parse((await cli('store', 'stats', '--store-dir', s, '--json')).stdout);
    expect(after.storedBytes).toBeLessThanOrEqual(target);
    expect((await cli('store', 'get', root, '--target', join(dir, 'root-out'), '--store-dir', s)).code).toBe(0);
    const bad = await cli('evict', '--to-size', '1k', '--strategy', 'random', '--store-dir', s);
    expect(bad.code).toBe(ExitCodes.USAGE);
    expect(bad.stderr).toContain('--strategy is lru or largest');
  });
});

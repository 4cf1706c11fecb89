// --remote and `cascache flush` against a real S3-protocol server process (s3rver): three "machines"
// (store dirs) share one bucket; a dead remote is a warning and a journal record, never a failure.
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LayeredStore, openLocalStore, openRemoteTier } from '@cascache/core';
import { ExitCodes } from '../src';
import { startS3Server, type S3Server } from '../../../tools/s3rver';
import { cli } from './support/run-cli';

const BUCKET = 'cascache-cli';

describe('cascache with --remote s3://', () => {
  let s3: S3Server;
  let dir: string;
  let remote: string;
  const saved = { ...process.env };
  beforeAll(async () => {
    s3 = await startS3Server([BUCKET]);
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1', CASCACHE_SECRET: 'cli-remote-test-secret-0123456789abcdef' });
  });
  afterAll(async () => {
    process.env = saved;
    await s3.close();
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cascache-cli-remote-'));
    remote = `s3://${BUCKET}/${dir.slice(-6)}?endpoint=${encodeURIComponent(s3.endpoint)}&forcePathStyle=true`;
    mkdirSync(join(dir, 'ui/src'), { recursive: true });
    mkdirSync(join(dir, 'ui/dist'), { recursive: true });
    writeFileSync(join(dir, 'ui/package.json'), JSON.stringify({ name: 'ui', version: '1.0.0' }));
    writeFileSync(join(dir, 'ui/src/index.ts'), 'export const a = 1;\n');
    for (let i = 0; i < 5; i++) writeFileSync(join(dir, `ui/dist/chunk${i}.js`), `export const v${i} = ${JSON.stringify('x'.repeat(9000 + i))};\n`);
    cpSync(join(dir, 'ui/dist'), join(dir, 'expected'), { recursive: true });
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const build = (store: string, ...extra: string[]) => cli('cache', 'build', 'ui', '--dir', join(dir, 'ui'), '--source', join(dir, 'ui/dist'), '--store-dir', join(dir, store), ...extra);
  /** Restores into ui/dist, as on a fresh checkout (the output directory is never an input). */
  const get = (store: string, ...extra: string[]) => {
    rmSync(join(dir, 'ui/dist'), { recursive: true, force: true });
    return cli('cache', 'get', 'ui', '--dir', join(dir, 'ui'), '--target', join(dir, 'ui/dist'), '--store-dir', join(dir, store), ...extra);
  };
  const same = (a: string, b: string) => {
    expect(readdirSync(b).sort()).toEqual(readdirSync(a).sort());
    for (const n of readdirSync(a)) expect(readFileSync(join(b, n)).equals(readFileSync(join(a, n)))).toBe(true);
  };

  it('cache build uploads; cache get on another machine restores from the remote alone', async () => {
    const b = await build('a', '--remote', remote);
    expect(b.code).toBe(0);
    expect(b.stderr).toMatch(/remote: uploaded \d/);
    const g = await get('b', '--remote', remote);
    expect(g.code).toBe(0);
    same(join(dir, 'expected'), join(dir, 'ui/dist'));
    // Without the remote, machine c misses (nothing local), with a distinct exit code.
    expect((await get('c')).code).toBe(ExitCodes.MISS);
  });

  it('store add uploads the root; store get on another machine fetches the tree', async () => {
    const add = await cli('store', 'add', 'site', '--source', join(dir, 'ui/dist'), '--store-dir', join(dir, 'a'), '--remote', remote);
    expect(add.code).toBe(0);
    const digest = add.stdout.trim();
    const got = await cli('store', 'get', digest, '--target', join(dir, 'site'), '--store-dir', join(dir, 'b'), '--remote', remote);
    expect(got.code).toBe(0);
    same(join(dir, 'ui/dist'), join(dir, 'site'));
  });

  it('a dead remote is a warning: the build succeeds locally, and flush sends it once the remote is back', async () => {
    await s3.kill();
    try {
      const b = await build('a', '--remote', remote);
      expect(b.code).toBe(0);
      expect(b.stderr).toMatch(/warning: .*s3:\/\/cascache-cli/);
      // No --timeout: a tier that refuses connections ends the wait on the breaker's verdict.
      const stillDown = await cli('flush', '--store-dir', join(dir, 'a'), '--json');
      expect(stillDown.code).toBe(ExitCodes.UNAVAILABLE);
      const report = JSON.parse(stillDown.stdout);
      expect(Object.values(report.pending)).toEqual([1]);
      expect(Object.values(report.unreachable)).toEqual([expect.stringMatching(/ECONNREFUSED|connect/)]);
      const text = await cli('flush', '--store-dir', join(dir, 'a'));
      expect(text.code).toBe(ExitCodes.UNAVAILABLE);
      expect(text.stderr).toMatch(/^cascache: uploading 1 pending record\(s\) to s3:\/\/cascache-cli.*gives up after 600 s/m);
      expect(text.stderr).toMatch(/^cascache: s3:\/\/cascache-cli.* is unreachable \(.+\); its uploads stay journaled$/m);
    } finally {
      await s3.restart();
    }
    // No --remote: flush finds the tier's URL in the journal.
    const f = await cli('flush', '--store-dir', join(dir, 'a'), '--json');
    expect(f.code).toBe(0);
    const report = JSON.parse(f.stdout);
    expect(report).toMatchObject({ drained: true, stats: { records: 1 } });
    expect(report.stats.bytesSent).toBeGreaterThan(0);
    const g = await get('b', '--remote', remote);
    expect(g.code).toBe(0);
    same(join(dir, 'expected'), join(dir, 'ui/dist'));
  });

  it('sets uploads aside when credentials are missing, says so, and sends them after --retry-set-aside', async () => {
    const creds = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    // No credentials anywhere in the SDK's chain (and no instance metadata to wait for).
    Object.assign(process.env, { AWS_EC2_METADATA_DISABLED: 'true', AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'), AWS_CONFIG_FILE: join(dir, 'none') });
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    try {
      expect((await build('a', '--remote', remote)).code).toBe(0);
      const f = await cli('flush', '--store-dir', join(dir, 'a'));
      expect(f.stderr).toMatch(/1 upload\(s\) to s3:\/\/cascache-cli.* set aside after permanent errors \(.*credentials.*\); fix the cause, then `cascache flush --retry-set-aside`/i);
    } finally {
      Object.assign(process.env, { AWS_ACCESS_KEY_ID: creds.id, AWS_SECRET_ACCESS_KEY: creds.secret });
    }
    const again = await cli('flush', '--store-dir', join(dir, 'a'), '--remote', remote, '--retry-set-aside', '--json');
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ drained: true, stats: { records: 1 } });
    expect((await get('b', '--remote', remote)).code).toBe(0);
    same(join(dir, 'expected'), join(dir, 'ui/dist'));
  });

  it('takes tiers and the store from a config file (--config or CASCACHE_CONFIG), the schema serve reads', async () => {
    writeFileSync(join(dir, 'cascache.json'), JSON.stringify({ storeDir: join(dir, 'from-config'), tiers: [{ url: remote, level: 9 }] }));
    const b = await build('a', '--config', join(dir, 'cascache.json'));
    expect(b.code).toBe(0);
    expect(b.stderr).toMatch(/remote: uploaded \d/);
    process.env.CASCACHE_CONFIG = join(dir, 'cascache.json');
    try {
      rmSync(join(dir, 'ui/dist'), { recursive: true, force: true });
      const g = await cli('cache', 'get', 'ui', '--dir', join(dir, 'ui'), '--target', join(dir, 'ui/dist'));
      expect(g.code).toBe(0);
      expect(readdirSync(join(dir, 'from-config', 'v1'))).toContain('ac'); // the store the file names
    } finally {
      delete process.env.CASCACHE_CONFIG;
    }
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ tiers: [{ url: remote, levle: 9 }] }));
    expect((await build('a', '--config', join(dir, 'bad.json'))).code).toBe(ExitCodes.USAGE);
  });

  it('gc --remote drops old remote entries, condemns their packs, and deletes them on a later pass', async () => {
    expect((await build('a', '--remote', remote)).code).toBe(0);
    const dry = await cli('gc', 'all', '--store-dir', join(dir, 'a'), '--remote', remote, '--dry-run', '--json');
    expect(dry.code).toBe(0);
    const plans = dry.stdout.trim().split(/\n(?=\{)/).map((t) => JSON.parse(t));
    expect(plans[1]).toMatchObject({ dryRun: true, plan: { liveTrees: 1, entries: [] } });
    const first = await cli('gc', 'all', '--store-dir', join(dir, 'a'), '--remote', remote, '--older-than', '0s', '--grace', '0s');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/condemned 1/);
    const second = await cli('gc', 'all', '--store-dir', join(dir, 'a'), '--remote', remote, '--grace', '0s');
    expect(second.stdout).toMatch(/deleted 1 packs/);
    expect((await get('fresh', '--remote', remote)).code).toBe(ExitCodes.MISS);
  });

  it('refuses credentials or unknown parameters in a remote URL without echoing their values', async () => {
    const r = await build('a', '--remote', 's3://bucket-name/prefix?secret=hunter2');
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.stderr).toContain('does not take the parameter "secret"');
    expect(r.stderr).not.toContain('hunter2');
    const u = await build('a', '--remote', 's3://AKIA:hunter2@bucket-name/prefix');
    expect(u.code).toBe(ExitCodes.USAGE);
    expect(u.stderr).not.toContain('hunter2');
    const secret = process.env.CASCACHE_SECRET;
    delete process.env.CASCACHE_SECRET;
    try {
      const unsigned = await build('a', '--remote', remote);
      expect(unsigned.code).toBe(ExitCodes.USAGE);
      expect(unsigned.stderr).toContain('remote tiers need a signing secret');
    } finally {
      process.env.CASCACHE_SECRET = secret;
    }
  });

  it('warm fetches what the newest run of a branch produced, so a later get needs no remote', async () => {
    const built = await build('a', '--remote', remote, '--json');
    expect(built.code).toBe(0);
    const { key } = JSON.parse(built.stdout);
    // Machine a shares a run record for that entry, as the Nx agent does after a run.
    const local = await openLocalStore({ root: join(dir, 'a'), secret: Buffer.from(process.env.CASCACHE_SECRET!) });
    const layered = new LayeredStore({ local, remotes: [openRemoteTier({ url: remote })], secret: Buffer.from(process.env.CASCACHE_SECRET!), sync: true });
    await layered.recordRun({ tool: 'nx', namespace: 'cli', branch: 'main', commit: null, targets: ['build'], startTime: Date.now(), keys: [key] });
    await layered.close();
    local.close();

    const warm = await cli('warm', '--branch', 'feature/x', '--branch', 'main', '--store-dir', join(dir, 'b'), '--remote', remote, '--json');
    expect(warm.code).toBe(0);
    const report = JSON.parse(warm.stdout);
    expect(report).toMatchObject({ entries: 1, fetched: 1, local: 0, missing: 0, run: { tool: 'nx', branch: 'main', targets: ['build'] } });
    expect(report.bytes).toBeGreaterThanOrEqual(5 * 9000);
    // Everything is local now: a get with no remote at all is a hit, byte for byte.
    expect((await get('b')).code).toBe(0);
    same(join(dir, 'expected'), join(dir, 'ui/dist'));
    const again = await cli('warm', '--branch', 'main', '--store-dir', join(dir, 'b'), '--remote', remote);
    expect(again.stderr).toMatch(/1 entries, 0 fetched, 1 already here, 0 missing/);

    expect((await cli('warm', '--branch', 'nothing-here', '--store-dir', join(dir, 'c'), '--remote', remote)).code).toBe(ExitCodes.MISS);
    expect((await cli('warm', '--store-dir', join(dir, 'c'))).code).toBe(ExitCodes.USAGE);
  });
});

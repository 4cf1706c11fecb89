import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { generateSigningKey } from '@cascache/core';
import { redact, resolveServeConfig } from '../src/serve';

const BIN = join(__dirname, '../dist/bin.js');

describe('cascache serve configuration', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cascache-serve-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('takes flags over CASCACHE_* env over the config file over defaults', () => {
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ host: '10.0.0.1', port: 9000, namespace: 'file', tokens: { readWrite: ['file-rw'] } }));
    const cfg = resolveServeConfig({ config: 'c.json', port: 9100 }, { CASCACHE_HOST: '127.0.0.2', CASCACHE_TOKENS_RO: 'a, b' }, dir);
    expect(cfg).toMatchObject({ host: '127.0.0.2', port: 9100, namespace: 'file', gzipLevel: 1, storeDir: join(dir, '.cascache') });
    expect(cfg.tokens).toEqual({ readWrite: ['file-rw'], readOnly: ['a', 'b'], admin: [], scoped: [] });
    expect(resolveServeConfig({}, {}, dir)).toMatchObject({ host: '127.0.0.1', port: 7380, namespace: 'default', readNamespaces: ['default'], secret: null, signingKey: null, trustedKeys: {} });
  });

  it('takes namespaces, scoped tokens and keys from the environment over the file, checked', () => {
    const k = generateSigningKey();
    const scoped = [{ token: 'pr-token-0123456789', name: 'pr-1', read: ['main'], write: 'pr-1' }];
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ readNamespaces: ['main'], namespace: 'dev', trustedKeys: { main: [k.publicKey] }, tokens: { scoped } }));
    const cfg = resolveServeConfig({ config: 'c.json' }, { CASCACHE_SIGNING_KEY: k.privateKey }, dir);
    expect(cfg).toMatchObject({ namespace: 'dev', readNamespaces: ['main', 'dev'], trustedKeys: { main: [k.publicKey] }, signingKey: k.privateKey });
    expect(cfg.tokens.scoped).toEqual(scoped);
    const shown = JSON.stringify(redact(cfg));
    expect(shown).not.toContain('pr-token-0123456789');
    expect(shown).not.toContain(k.privateKey.slice(20));
    expect(shown).toContain(`ed25519 ${k.keyId}`);
    expect(resolveServeConfig({ config: 'c.json' }, { CASCACHE_READ_NAMESPACES: 'a,b', CASCACHE_TOKENS_SCOPED: '[]' }, dir)).toMatchObject({ readNamespaces: ['a', 'b', 'dev'], tokens: { scoped: [] } });
    for (const [env, what] of [
      [{ CASCACHE_TRUSTED_KEYS: '{"main": ["ed25519:nope"]}' }, 'CASCACHE_TRUSTED_KEYS'],
      [{ CASCACHE_READ_NAMESPACES: 'main,../x' }, 'CASCACHE_READ_NAMESPACES'],
      [{ CASCACHE_TOKENS_SCOPED: '[{"token": "short", "read": ["main"]}]' }, 'CASCACHE_TOKENS_SCOPED'],
      [{ CASCACHE_TOKENS_SCOPED: '[{"token": "long-enough-token-1", "read": ["main"], "writes": "x"}]' }, 'unknown key "writes"'],
    ] as const) {
      expect(() => resolveServeConfig({}, env, dir)).toThrow(expect.objectContaining({ code: 'E_CONFIG', message: expect.stringContaining(what) }));
    }
  });

  it('takes remote tiers from --remote, then CASCACHE_REMOTE / CASCACHE_TIERS, then the file, validated', () => {
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ tiers: ['s3://file-bucket/p', { url: 'gs://gcs-bucket/q', readOnly: true, level: 9 }], syncUploads: true }));
    const file = resolveServeConfig({ config: 'c.json' }, {}, dir);
    expect(file.tiers).toEqual([{ url: 's3://file-bucket/p' }, { url: 'gs://gcs-bucket/q', readOnly: true, level: 9 }].map((t) => expect.objectContaining(t)));
    expect(file.syncUploads).toBe(true);
    expect(resolveServeConfig({ config: 'c.json' }, { CASCACHE_REMOTE: 's3://env-bucket/a, s3://env-bucket/b' }, dir).tiers.map((t) => t.url)).toEqual(['s3://env-bucket/a', 's3://env-bucket/b']);
    expect(resolveServeConfig({ config: 'c.json', remote: ['s3://flag-bucket/x'] }, { CASCACHE_TIERS: '["s3://env-bucket/t"]' }, dir).tiers.map((t) => t.url)).toEqual(['s3://flag-bucket/x']);
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ tiers: [{ url: 's3://ok-bucket/p', levle: 3 }] }));
    expect(() => resolveServeConfig({ config: 'bad.json' }, {}, dir)).toThrow(expect.objectContaining({ code: 'E_CONFIG', message: expect.stringContaining('unknown key "levle"') }));
    expect(() => resolveServeConfig({ remote: ['ftp://x/y'] }, {}, dir)).toThrow(expect.objectContaining({ code: 'E_CONFIG' }));
  });

  it('rejects unknown config keys, bad ports and short secrets with E_CONFIG', () => {
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ prot: 1 }));
    expect(() => resolveServeConfig({ config: 'c.json' }, {}, dir)).toThrow(expect.objectContaining({ code: 'E_CONFIG', message: expect.stringContaining('unknown key "prot"') }));
    expect(() => resolveServeConfig({ port: 70000 }, {}, dir)).toThrow(expect.objectContaining({ code: 'E_CONFIG' }));
    expect(() => resolveServeConfig({}, { CASCACHE_SECRET: 'short' }, dir)).toThrow(expect.objectContaining({ code: 'E_CONFIG' }));
  });

  it('never prints tokens or the secret', () => {
    const cfg = resolveServeConfig({ remote: ['https://team.example.com/'] }, { CASCACHE_TOKENS_RW: 'super-secret-token', CASCACHE_SECRET: 'x'.repeat(40), CASCACHE_REMOTE_TOKEN: 'remote-tier-token' }, dir);
    expect(cfg.tiers[0]!.token).toBe('remote-tier-token');
    const shown = JSON.stringify(redact(cfg));
    expect(shown).not.toContain('super-secret-token');
    expect(shown).not.toContain('remote-tier-token');
    expect(shown).not.toContain('x'.repeat(40));
    expect(shown).toContain('1 token(s)');
  });

  it('refuses to listen beyond loopback without a token (exit 2)', () => {
    const r = spawnSync(process.execPath, [BIN, 'serve', '--host', '0.0.0.0', '--port', '0', '--store-dir', dir], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('refusing to listen on 0.0.0.0 with no token');
  });

  it('serves the Nx API on the port it reports, with tokens from the environment', async () => {
    const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--store-dir', dir], {
      env: { ...process.env, CASCACHE_TOKENS_RW: 'rw-token', CASCACHE_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    try {
      const banner = await new Promise<string>((resolve) => createInterface({ input: child.stderr! }).on('line', (l) => l.startsWith('cascache: serving') && resolve(l)));
      expect(banner).not.toContain('rw-token');
      const url = /at (http:\/\/\S+)/.exec(banner)![1]!;
      expect((await fetch(`${url}/v1/cache/1`)).status).toBe(401);
      expect((await fetch(`${url}/v1/cache/1`, { headers: { authorization: 'Bearer rw-token' } })).status).toBe(404);
    } finally {
      // It closes its store on the way out; its directory is removed after this test.
      const exited = child.exitCode === null ? new Promise((resolve) => child.once('exit', resolve)) : null;
      child.kill('SIGTERM');
      await exited;
    }
  });
});

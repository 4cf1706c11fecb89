import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ActionCache,
  computeActionKey,
  createManifest,
  digestOf,
  ErrorCodes,
  FsAcStore,
  MemoryAcStore,
  MemoryBlobStore,
  putManifest,
  type AcMissReason,
} from '../src';
import { tempDir } from './support/tmp';

const SECRET = Buffer.from('0123456789abcdef0123456789abcdef-test-secret');

async function setup(secret: Buffer | null = SECRET) {
  const blobs = new MemoryBlobStore();
  const entries = new MemoryAcStore();
  const warnings: AcMissReason[] = [];
  const ac = new ActionCache({ entries, blobs, secret, writer: 'test', now: () => 1_700_000_000_000, onWarning: (w) => warnings.push(w.reason) });
  const content = Buffer.from('console.log("built");\n');
  await blobs.put(digestOf(content), content);
  const manifest = createManifest([{ path: 'dist/main.js', type: 'file', mode: 0o644, size: content.length, chunks: [digestOf(content)] }]);
  const { digest } = await putManifest(blobs, manifest);
  return { blobs, entries, ac, warnings, manifest, manifestDigest: digest, content };
}

const KEY = computeActionKey(['nx', 'default', '1234567890']);

describe('action keys', () => {
  it('are domain-separated and length-prefixed: moving bytes between parts changes the key', () => {
    expect(computeActionKey(['nx', 'ab', 'c'])).not.toBe(computeActionKey(['nx', 'a', 'bc']));
    expect(computeActionKey(['nx', 'ns', 'h'])).not.toBe(computeActionKey(['turbo', 'ns', 'h']));
    expect(computeActionKey(['nx', 'ns', 'h'])).toBe(computeActionKey(['nx', 'ns', 'h']));
  });

  it('match a fixed vector of the documented encoding', () => {
    // "cascache.action-key/v1" || u64be(2) "nx" || u64be(1) "a"
    const bytes = Buffer.concat([
      Buffer.from('cascache.action-key/v1'),
      Buffer.from('0000000000000002', 'hex'),
      Buffer.from('nx'),
      Buffer.from('0000000000000001', 'hex'),
      Buffer.from('a'),
    ]);
    expect(computeActionKey(['nx', 'a'])).toBe(digestOf(bytes));
  });
});

describe('ActionCache', () => {
  it('round-trips a signed entry with its manifest', async () => {
    const { ac, manifestDigest, manifest } = await setup();
    expect(await ac.get('default', KEY)).toBeNull();
    const put = await ac.put('default', KEY, { manifest: manifestDigest, size: 22 });
    expect(put.created).toBe(true);
    const hit = await ac.get('default', KEY);
    expect(hit?.entry).toEqual({ format: 'cascache.ac/v1', namespace: 'default', key: KEY, manifest: manifestDigest, size: 22, created: 1_700_000_000_000, writer: 'test' });
    expect(hit?.manifest).toEqual(manifest);
    expect(ac.signing).toBe('hmac-sha256');
  });

  it('is write-once: same manifest is a no-op, a different one is E_EXISTS and changes nothing', async () => {
    const { ac, manifestDigest, blobs } = await setup();
    await ac.put('default', KEY, { manifest: manifestDigest, size: 22 });
    expect((await ac.put('default', KEY, { manifest: manifestDigest, size: 22 })).created).toBe(false);
    const other = createManifest([{ path: 'evil.js', type: 'file', mode: 0o644, size: 0, chunks: [] }]);
    const { digest: otherDigest } = await putManifest(blobs, other);
    await expect(ac.put('default', KEY, { manifest: otherDigest, size: 0 })).rejects.toMatchObject({ code: ErrorCodes.EXISTS });
    expect((await ac.get('default', KEY))?.entry.manifest).toBe(manifestDigest);
  });

  it('keeps namespaces apart', async () => {
    const { ac, manifestDigest } = await setup();
    await ac.put('pr-123', KEY, { manifest: manifestDigest, size: 22 });
    expect(await ac.get('default', KEY)).toBeNull();
    expect(await ac.get('pr-123', KEY)).not.toBeNull();
  });

  it.each([
    ['a flipped manifest digest', (e: Record<string, unknown>) => ({ ...e, manifest: digestOf('poison') }), 'bad-signature'],
    ['a changed writer', (e: Record<string, unknown>) => ({ ...e, writer: 'attacker' }), 'bad-signature'],
    ['a forged signature', (e: Record<string, unknown>) => ({ ...e, sig: `hmac-sha256:${'0'.repeat(64)}` }), 'bad-signature'],
    ['a missing signature', (e: Record<string, unknown>) => ({ ...e, sig: undefined }), 'malformed'],
    ['an extra field', (e: Record<string, unknown>) => ({ ...e, admin: true }), 'malformed'],
  ])('serves %s as a miss with a warning', async (_, tamper, reason) => {
    const { ac, entries, manifestDigest, warnings } = await setup();
    await ac.put('default', KEY, { manifest: manifestDigest, size: 22 });
    const stored = JSON.parse((await entries.get('default', KEY))!.toString());
    entries.tamper('default', KEY, Buffer.from(JSON.stringify(tamper(stored))));
    expect(await ac.get('default', KEY)).toBeNull();
    expect(warnings).toEqual([reason]);
  });

  it('serves garbage bytes as a miss, never an error', async () => {
    const { ac, entries, warnings } = await setup();
    entries.tamper('default', KEY, randomBytes(100));
    expect(await ac.get('default', KEY)).toBeNull();
    expect(warnings).toEqual(['malformed']);
  });

  it('refuses a valid entry copied under another key (replay)', async () => {
    const { ac, entries, manifestDigest, warnings } = await setup();
    await ac.put('default', KEY, { manifest: manifestDigest, size: 22 });
    const other = computeActionKey(['nx', 'default', '999']);
    entries.tamper('default', other, (await entries.get('default', KEY))!);
    expect(await ac.get('default', other)).toBeNull();
    expect(warnings).toEqual(['mismatch']);
  });

  it('rejects entries signed with another secret', async () => {
    const a = await setup();
    await a.ac.put('default', KEY, { manifest: a.manifestDigest, size: 22 });
    const other = new ActionCache({ entries: a.entries, blobs: a.blobs, secret: randomBytes(32) });
    expect(await other.get('default', KEY)).toBeNull();
  });

  it('treats a missing manifest or a missing chunk as a miss', async () => {
    const { ac, blobs, manifestDigest, content, warnings } = await setup();
    await ac.put('default', KEY, { manifest: manifestDigest, size: 22 });
    await blobs.delete(digestOf(content));
    expect(await ac.get('default', KEY)).toBeNull();
    expect(await ac.get('default', KEY, { verifyChunks: false })).not.toBeNull();
    await blobs.delete(manifestDigest);
    expect(await ac.get('default', KEY)).toBeNull();
    expect(warnings).toEqual(['chunks-missing', 'manifest-missing']);
  });

  it('replaces an entry that can never be served instead of failing the write', async () => {
    const { ac, entries, manifestDigest } = await setup();
    entries.tamper('default', KEY, Buffer.from('{"garbage":true}'));
    expect((await ac.put('default', KEY, { manifest: manifestDigest, size: 22 })).created).toBe(true);
    expect((await ac.get('default', KEY))?.entry.manifest).toBe(manifestDigest);
  });

  it('requires a secret of at least 32 bytes', () => {
    expect(() => new ActionCache({ entries: new MemoryAcStore(), blobs: new MemoryBlobStore(), secret: Buffer.alloc(31) })).toThrow(
      expect.objectContaining({ code: ErrorCodes.CONFIG }),
    );
  });

  it('works unsigned for a purely local store, and says so', async () => {
    const { ac, manifestDigest } = await setup(null);
    expect(ac.signing).toBe('none');
    await ac.put('default', KEY, { manifest: manifestDigest, size: 22 });
    expect((await ac.get('default', KEY))?.entry.manifest).toBe(manifestDigest);
  });

  it('rejects malformed keys and namespaces', async () => {
    const { ac, manifestDigest } = await setup();
    await expect(ac.get('default', 'nope')).rejects.toMatchObject({ code: ErrorCodes.BAD_INPUT });
    await expect(ac.put('../etc', KEY, { manifest: manifestDigest, size: 1 })).rejects.toMatchObject({ code: ErrorCodes.BAD_INPUT });
    await expect(ac.put('default', KEY, { manifest: 'x', size: 1 })).rejects.toMatchObject({ code: ErrorCodes.BAD_INPUT });
  });
});

describe('FsAcStore', () => {
  it('lets exactly one of many racing writers create an entry', async () => {
    const { dir, remove } = await tempDir();
    try {
      const store = new FsAcStore(dir);
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.putIfAbsent('default', KEY, Buffer.from(`writer ${i}`))));
      const created = results.filter((r) => r.created);
      expect(created).toHaveLength(1);
      const stored = (await store.get('default', KEY))!.toString();
      for (const r of results) if (!r.created) expect(r.existing.toString()).toBe(stored);
      const file = join(dir, 'v1', 'ac', 'default', KEY.slice(0, 2), KEY);
      expect((await readFile(file)).toString()).toBe(stored);
      const listed = [];
      for await (const e of store.list()) listed.push(e);
      expect(listed).toEqual([{ namespace: 'default', key: KEY, lastUsedMs: expect.any(Number) }]);
      await writeFile(file, 'x'.repeat(100_000));
      expect((await store.get('default', KEY))!.length).toBeGreaterThan(64 * 1024);
    } finally {
      await remove();
    }
  });
});

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { computeActionKey, ErrorCodes, ingestDirectory, materializeToDirectory, openLocalStore } from '../src';
import { tempDir } from './support/tmp';

const SECRET = Buffer.alloc(32, 7);

describe('openLocalStore', () => {
  let dir: string;
  let remove: () => Promise<void>;
  beforeEach(async () => ({ dir, remove } = await tempDir()));
  afterEach(() => remove());

  it('writes a descriptor once and keeps its chunker parameters', async () => {
    const s = await openLocalStore({ root: dir, secret: SECRET, chunker: { min: 1024, avg: 4096, max: 16384 } });
    const onDisk = JSON.parse(await readFile(join(dir, 'v1', 'store.json'), 'utf8'));
    expect(onDisk).toMatchObject({ format: 'cascache-store', version: 1, digest: 'blake3-256', chunker: { algorithm: 'fastcdc-2020-nc1', min: 1024, avg: 4096, max: 16384 } });
    expect(s.descriptor).toEqual(onDisk);
    const again = await openLocalStore({ root: dir, secret: SECRET });
    expect(again.descriptor.chunker.avg).toBe(4096);
  });

  it('refuses other chunker parameters for an existing store', async () => {
    await openLocalStore({ root: dir, secret: SECRET });
    await expect(openLocalStore({ root: dir, secret: SECRET, chunker: { min: 1024, avg: 4096, max: 16384 } })).rejects.toMatchObject({ code: ErrorCodes.CONFIG });
  });

  it('refuses a corrupt descriptor with E_CONFIG', async () => {
    await openLocalStore({ root: dir, secret: SECRET });
    await writeFile(join(dir, 'v1', 'store.json'), '{');
    await expect(openLocalStore({ root: dir, secret: SECRET })).rejects.toMatchObject({ code: ErrorCodes.CONFIG });
  });

  it('creates one descriptor when opened concurrently', async () => {
    const all = await Promise.all(Array.from({ length: 10 }, () => openLocalStore({ root: dir, secret: SECRET })));
    expect(new Set(all.map((s) => s.descriptor.created)).size).toBe(1);
  });

  it('caches and restores a tree end to end through the action cache', async () => {
    const store = await openLocalStore({ root: join(dir, 'store'), secret: SECRET });
    await writeFile(join(dir, 'a.txt'), 'hello');
    const ingest = await ingestDirectory(store.blobs, dir, { exclude: (p) => p === 'store' });
    const key = computeActionKey(['cli', 'demo', 'build']);
    await store.actionCache.put('default', key, { manifest: ingest.digest, size: ingest.logicalBytes });
    const hit = await store.actionCache.get('default', key);
    await materializeToDirectory(store.blobs, hit!.manifest, join(dir, 'restored'));
    expect(await readFile(join(dir, 'restored', 'a.txt'), 'utf8')).toBe('hello');
  });
});

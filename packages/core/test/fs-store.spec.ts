import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Codec, digestOf, ErrorCodes, FsBlobStore, readBlobHeader } from '../src';
import { blobStoreConformance } from './support/conformance';
import { tempDir } from './support/tmp';

blobStoreConformance('fs', async () => {
  const { dir, remove } = await tempDir();
  const store = new FsBlobStore({ root: dir });
  return {
    store,
    corrupt: async (d) => {
      const p = store.pathOf(d);
      const bytes = await readFile(p);
      bytes[bytes.length - 1] ^= 0x01; // one flipped bit in the payload
      await writeFile(p, bytes);
    },
    cleanup: remove,
  };
});

describe('FsBlobStore on disk', () => {
  let dir: string;
  let remove: () => Promise<void>;
  beforeEach(async () => ({ dir, remove } = await tempDir()));
  afterEach(() => remove());

  it('shards blobs as v1/blobs/<first two hex>/<digest>, framed and compressed, with no temp files left', async () => {
    const store = new FsBlobStore({ root: dir, level: 3 });
    const text = Buffer.from('const x = 1;\n'.repeat(1000));
    const d = digestOf(text);
    const r = await store.put(d, text);
    const path = join(dir, 'v1', 'blobs', d.slice(0, 2), d);
    expect(store.pathOf(d)).toBe(path);
    const frame = await readFile(path);
    expect(readBlobHeader(frame)).toEqual({ version: 1, codec: Codec.ZSTD, rawLength: text.length });
    expect(frame.length).toBe(r.storedBytes);
    expect(frame.length).toBeLessThan(text.length / 10);
    expect(await readdir(join(dir, 'v1', 'tmp'))).toEqual([]);
  });

  it('moves a corrupt blob to quarantine and reports it', async () => {
    const events: string[] = [];
    const store = new FsBlobStore({ root: dir, onCorrupt: (e) => events.push(e.digest) });
    const data = Buffer.from('hello world, hello world, hello world');
    const d = digestOf(data);
    await store.put(d, data);
    await writeFile(store.pathOf(d), Buffer.from('garbage that is not a frame'));
    await expect(store.get(d)).rejects.toMatchObject({ code: ErrorCodes.INTEGRITY });
    expect(events).toEqual([d]);
    const quarantined = await readdir(join(dir, 'v1', 'quarantine'));
    expect(quarantined).toHaveLength(1);
    expect(quarantined[0]!.startsWith(`${d}.`)).toBe(true);
    await expect(stat(store.pathOf(d))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('stores already-compressed content raw', async () => {
    const store = new FsBlobStore({ root: dir });
    const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(4096, 7)]);
    const d = digestOf(png);
    await store.put(d, png);
    expect(readBlobHeader(await readFile(store.pathOf(d))).codec).toBe(Codec.RAW);
  });
});

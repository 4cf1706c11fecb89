import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { computeActionKey, ingestDirectory, openLocalStore, type LocalStore } from '@cascache/core';
import { AutoEvictor } from '../src';

describe('automatic eviction', () => {
  let dir: string;
  let store: LocalStore;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cascache-autoevict-'));
    store = await openLocalStore({ root: join(dir, 'store'), secret: null });
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  async function size(): Promise<number> {
    let total = 0;
    for await (const b of store.blobs.list()) total += b.storedSize;
    return total;
  }

  it('brings the store under its maximum, evicting least recently used entries, and leaves a store within it alone', async () => {
    for (let i = 0; i < 6; i++) {
      const src = join(dir, `src${i}`);
      await mkdir(src);
      let text = '';
      for (let j = 0; text.length < 60_000; j++) text += `${i}:${j}:${Math.sqrt(j * (i + 1))}\n`;
      await writeFile(join(src, 'out.js'), text);
      const r = await ingestDirectory(store.blobs, src);
      await store.actionCache.put('default', computeActionKey(['t', String(i)]), { manifest: r.digest, size: r.logicalBytes });
    }
    const before = await size();
    const events: unknown[] = [];
    const evictor = new AutoEvictor(store, { maxBytes: Math.floor(before / 2), graceMs: 0, onEvict: (e) => events.push(e) });
    try {
      await evictor.check();
      expect(await size()).toBeLessThanOrEqual(Math.floor(before / 2));
      expect(events).toEqual([expect.objectContaining({ before, result: expect.objectContaining({ deletedEntries: expect.any(Number) }) })]);
      await evictor.check();
      expect(events).toHaveLength(1); // already within the maximum: nothing to do
    } finally {
      evictor.stop();
    }
  });
});

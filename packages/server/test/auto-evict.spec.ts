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
  afterEach(async () => {
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function size(): Promise<number> {
    let total = 0;
    for await (const b of store.blobs.list()) total += b.storedSize;
    return total;
  }

  async function addOutputs(into: LocalStore, from: number, to: number): Promise<void> {
    for (let i = from; i < to; i++) {
      const src = join(dir, `src${i}`);
      await mkdir(src);
      let text = '';
      for (let j = 0; text.length < 60_000; j++) text += `${i}:${j}:${Math.sqrt(j * (i + 1))}\n`;
      await writeFile(join(src, 'out.js'), text);
      const r = await ingestDirectory(into.blobs, src);
      await into.actionCache.put('default', computeActionKey(['t', String(i)]), { manifest: r.digest, size: r.logicalBytes });
    }
  }

  it('brings the store under its maximum, evicting least recently used entries, and leaves a store within it alone', async () => {
    await addOutputs(store, 0, 6);
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

  it('counts what a process without the index wrote (the index is marked stale and rebuilt before the check)', async () => {
    await addOutputs(store, 0, 3);
    const within = await size();
    const other = await openLocalStore({ root: store.root, secret: null, index: false });
    await addOutputs(other, 3, 6);
    const before = await size();
    const events: Array<{ before?: number }> = [];
    const evictor = new AutoEvictor(store, { maxBytes: within, graceMs: 0, onEvict: (e) => events.push(e as { before?: number }) });
    try {
      await evictor.check();
      expect(events).toEqual([expect.objectContaining({ before })]);
      expect(await size()).toBeLessThanOrEqual(within);
    } finally {
      evictor.stop();
    }
  });
});

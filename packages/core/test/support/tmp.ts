import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLocalStore, type LocalStore, type LocalStoreOptions } from '../../src';

/** What tests opened, closed (newest first) by the next temp-dir removal. */
const toClose: Array<{ close(): unknown }> = [];

/** Registers something to close before the next temp dir is removed (a layered store before its local store). */
export function closeBeforeRemoval<T extends { close(): unknown }>(x: T): T {
  toClose.push(x);
  return x;
}

/** openLocalStore for tests: the store is closed (its index flushed) before its temp dir is removed. */
export async function openTestStore(options: LocalStoreOptions): Promise<LocalStore> {
  return closeBeforeRemoval(await openLocalStore(options));
}

/** A fresh temp directory and its remover, which first closes what tests registered. */
export async function tempDir(prefix = 'cascache-test-'): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return {
    dir,
    remove: async () => {
      for (const x of toClose.splice(0).reverse()) await x.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

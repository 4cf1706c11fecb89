import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLocalStore, type LocalStore, type LocalStoreOptions } from '../../src';

/** Stores opened through {@link openTestStore}, closed by the next temp-dir removal. */
const open = new Set<LocalStore>();

/** openLocalStore for tests: the store is closed (its index flushed) before its temp dir is removed. */
export async function openTestStore(options: LocalStoreOptions): Promise<LocalStore> {
  const store = await openLocalStore(options);
  open.add(store);
  return store;
}

/** A fresh temp directory and its remover, which first closes the stores tests opened. */
export async function tempDir(prefix = 'cascache-test-'): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return {
    dir,
    remove: async () => {
      for (const s of open) s.close();
      open.clear();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

import { MemoryBlobStore } from '../src';
import { blobStoreConformance } from './support/conformance';

blobStoreConformance('memory', async () => {
  const store = new MemoryBlobStore();
  return { store, corrupt: async (d) => store.corrupt(d) };
});

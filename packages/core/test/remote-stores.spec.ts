// Every remote backend against the object-level suite, and a PackStore on each against the
// BlobStore suite: memory, S3 on a real s3rver process, GCS on the fake JSON-API server.
import { randomBytes } from 'node:crypto';
import { GcsObjectStore, MemoryObjectStore, PackStore, S3ObjectStore, type ObjectStore } from '../src';
import { blobStoreConformance } from './support/conformance';
import { startFakeGcsServer, type FakeGcsServer } from './support/fake-gcs-server';
import { objectStoreConformance } from './support/object-conformance';
import { S3_CREDENTIALS, startS3Server, TEST_BUCKET, type S3Server } from '../../../tools/s3rver';

let s3: S3Server;
let gcs: FakeGcsServer;

beforeAll(async () => {
  [s3, gcs] = await Promise.all([startS3Server(), startFakeGcsServer([TEST_BUCKET])]);
});
afterAll(async () => {
  await Promise.all([s3?.close(), gcs?.close()]);
});

const prefix = () => `t-${randomBytes(6).toString('hex')}`;
const s3Store = (): ObjectStore =>
  new S3ObjectStore({ bucket: TEST_BUCKET, prefix: prefix(), endpoint: s3.endpoint, forcePathStyle: true, credentials: S3_CREDENTIALS, maxAttempts: 1 });
const gcsStore = (): ObjectStore => new GcsObjectStore({ bucket: TEST_BUCKET, prefix: prefix(), apiEndpoint: gcs.endpoint, projectId: 'test', maxAttempts: 1 });

/** Flips the last byte of a blob's frame inside its pack object. */
async function corruptInPack(store: PackStore, digest: string): Promise<void> {
  const loc = store.locate(digest)!;
  const key = `v1/packs/${loc.pack}.pack`;
  const body = (await store.objects.get(key))!;
  body[loc.offset + loc.length - 1]! ^= 0xff;
  await store.objects.put(key, body);
}

const backends: Array<[string, () => ObjectStore]> = [
  ['memory', () => new MemoryObjectStore()],
  ['s3 (s3rver process)', s3Store],
  ['gcs (fake JSON API server)', gcsStore],
];

for (const [name, make] of backends) {
  objectStoreConformance(name, async () => ({ objects: make() }));
  blobStoreConformance(`pack store on ${name}`, async () => {
    const store = new PackStore({ objects: make(), packTargetBytes: 64 * 1024 });
    return { store, corrupt: (d) => corruptInPack(store, d) };
  });
}

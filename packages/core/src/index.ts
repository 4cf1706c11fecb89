/**
 * @cascache/core public API. Everything a package outside core may use is exported here and only
 * here (the package `exports` map blocks deep imports); `test/public-api.spec.ts` pins this list.
 */
export { CascacheError, ErrorCodes, isCascacheError, type CascacheErrorOptions, type ErrorCode } from './errors';
export { assertDigest, digestFile, digestOf, digestStream, DigestHasher, DigestStream, DIGEST_HEX_LENGTH, isDigest, type Digest } from './digest';
export {
  Chunker,
  chunkLengths,
  chunkStream,
  CHUNKER_ALGORITHM,
  CHUNKER_BOUNDS,
  DEFAULT_CHUNKER_PARAMS,
  gearEntry,
  validateChunkerParams,
  type ChunkerParams,
} from './chunker';
export {
  BLOB_FORMAT_VERSION,
  BLOB_HEADER_BYTES,
  BLOB_MAGIC,
  Codec,
  decodeBlob,
  encodeBlob,
  looksCompressed,
  MAX_BLOB_BYTES,
  readBlobHeader,
  zstdFrameContentSize,
  type BlobHeader,
  type CodecId,
  type EncodeOptions,
} from './codec';
export { canonicalJson } from './canonical-json';
export type { BatchingBlobStore, BlobInfo, BlobStore, PutOptions, PutResult, StoreObserver } from './store/types';
export { inBatch } from './store/types';
export { MemoryBlobStore, type MemoryBlobStoreOptions } from './store/memory';
export { FsBlobStore, LAYOUT_VERSION, type FsBlobStoreOptions } from './store/fs';
export { PACK_MIN_BLOBS, PACK_TARGET_BYTES } from './store/packs';
export { FsAcStore } from './store/fs-ac';
export {
  assertSafePath,
  createManifest,
  encodeManifest,
  manifestChunks,
  manifestSize,
  MANIFEST_FORMAT,
  MANIFEST_LIMITS,
  normalizeEntryPath,
  parseManifest,
  permissionBits,
  symlinkEscapes,
  validateManifest,
  type DirEntry,
  type FileEntry,
  type Manifest,
  type ManifestEntry,
  type ManifestExtras,
  type SymlinkEntry,
} from './manifest';
export {
  fetchBlob,
  getManifest,
  ingestDirectory,
  ingestStream,
  ingestTar,
  materializeToDirectory,
  materializeToTar,
  putManifest,
  readChunks,
  type DirectoryIngestOptions,
  type IngestOptions,
  type IngestResult,
  type MaterializeOptions,
  type TarIngestOptions,
  type TarLimits,
  type TarOutputOptions,
} from './tree';
export {
  AC_FORMAT,
  ActionCache,
  assertNamespace,
  computeActionKey,
  MAX_AC_ENTRY_BYTES,
  MemoryAcStore,
  MIN_SECRET_BYTES,
  type AcEntry,
  type AcHit,
  type AcMissReason,
  type AcStore,
  type ActionCacheOptions,
} from './action-cache';
export { generateSigningKey, parseNamespaceList, parsePrivateKey, parsePublicKey, parseTrustedKeys, publicKeyOf, Trust, type SignatureCheck, type SignatureScheme, type TrustOptions } from './trust';
export { descriptorChunker, openLocalStore, type LocalStore, type LocalStoreOptions, type StoreDescriptor } from './local-store';
export { Limiter } from './limiter';
export { readAll } from './streams';
export { RootStore, type StoreRoot } from './roots';
export { verifyStore, type VerifyOptions, type VerifyProblem, type VerifyReport } from './verify';
export { formatBytes, parseByteSize } from './format';
export { DEFAULT_GC_GRACE_MS, executeGc, planEvict, planGc, type EvictOptions, type GcOptions, type GcPlan, type GcResult, type PlannedEntry } from './gc';
export { indexStats, REPORTED_TOOLS, storeReport, storeStats, type StoreReport, type StoreStats } from './stats';
export { INDEX_SCHEMA_VERSION, markIndexStale, recordRun, StoreIndex, type IndexCounts, type IndexOpenResult, type RunRecord, type RunSummary, type TaskMisses, type ToolStats } from './store-index';
export { writeFileAtomic } from './atomic-write';
export { checkRange, MemoryObjectStore, type ByteRange, type ObjectInfo, type ObjectStore } from './remote/object-store';
export { S3ObjectStore, type S3ObjectStoreOptions } from './remote/s3';
export { GcsObjectStore, type GcsObjectStoreOptions } from './remote/gcs';
export { BreakerObjectStore, type BreakerOptions } from './remote/breaker';
export { DEFAULT_PACK_TARGET_BYTES, PACK_INDEX_FORMAT, PackStore, TREE_FORMAT, type BlobLocation, type PackStoreOptions, type PackUploadResult } from './remote/pack-store';
export { ObjectAcStore, type ObjectAcStoreOptions } from './remote/object-ac';
export { openRemoteTier, parseRemoteUrl, parseTierConfigs, withDefaultToken, type OpenTierOptions, type RemoteLocation, type RemoteTier, type TierAcStore, type TierBlobStore, type TierConfig } from './remote/tier';
export { tierId, UploadJournal, type JournalItem, type JournalRecord } from './remote/journal';
export { LayeredStore, type DrainReport, type FetchTally, type LayeredEvent, type LayeredStoreOptions, type UploadStats } from './layered';
export type { SharedRun } from './remote/runs';
export { defaultBranch, gitState, isCommitId, type GitState } from './git';
export { findRun, prefetchRun, type FoundRun, type PrefetchReport, type RunQuery } from './prefetch';
export { CircuitBreaker } from './remote/breaker';
export { decodeFrameRecords, encodeFrameRecord, FRAME_STREAM_TYPE } from './remote/frame-stream';
export { HttpAcStore, HttpBlobStore, HttpTierClient, type HttpTierOptions } from './remote/http-tier';
export { executeRemoteGc, planRemoteGc, type RemoteGcOptions, type RemoteGcPlan, type RemoteGcResult } from './remote/gc';
export { zstdCompressStream, zstdDecompressStream } from './zstd-stream';
export { activeZstd, zstdFrameEnd, type ZstdBackendName } from './zstd';

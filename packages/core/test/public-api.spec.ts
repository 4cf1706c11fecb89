import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import * as api from '../src';

// Like @nx/devkit's public-api: adding to this list is a decision, not an accident.
describe('@cascache/core public API', () => {
  it('exports exactly these values', () => {
    expect(Object.keys(api).sort()).toMatchInlineSnapshot(`
[
  "AC_FORMAT",
  "ActionCache",
  "BLOB_FORMAT_VERSION",
  "BLOB_HEADER_BYTES",
  "BLOB_MAGIC",
  "BreakerObjectStore",
  "CHUNKER_ALGORITHM",
  "CHUNKER_BOUNDS",
  "CascacheError",
  "Chunker",
  "CircuitBreaker",
  "Codec",
  "DEFAULT_CHUNKER_PARAMS",
  "DEFAULT_GC_GRACE_MS",
  "DEFAULT_PACK_TARGET_BYTES",
  "DIGEST_HEX_LENGTH",
  "DigestHasher",
  "DigestStream",
  "ErrorCodes",
  "FRAME_STREAM_TYPE",
  "FsAcStore",
  "FsBlobStore",
  "GcsObjectStore",
  "HttpAcStore",
  "HttpBlobStore",
  "HttpTierClient",
  "INDEX_SCHEMA_VERSION",
  "LAYOUT_VERSION",
  "LayeredStore",
  "Limiter",
  "MANIFEST_FORMAT",
  "MANIFEST_LIMITS",
  "MAX_AC_ENTRY_BYTES",
  "MAX_BLOB_BYTES",
  "MIN_SECRET_BYTES",
  "MemoryAcStore",
  "MemoryBlobStore",
  "MemoryObjectStore",
  "ObjectAcStore",
  "PACK_INDEX_FORMAT",
  "PACK_MIN_BLOBS",
  "PACK_TARGET_BYTES",
  "PackStore",
  "REPORTED_TOOLS",
  "RootStore",
  "S3ObjectStore",
  "StoreIndex",
  "TREE_FORMAT",
  "Trust",
  "UploadJournal",
  "activeZstd",
  "assertDigest",
  "assertNamespace",
  "assertSafePath",
  "canonicalJson",
  "checkRange",
  "chunkLengths",
  "chunkStream",
  "computeActionKey",
  "createManifest",
  "decodeBlob",
  "decodeFrameRecords",
  "defaultBranch",
  "descriptorChunker",
  "digestFile",
  "digestOf",
  "digestStream",
  "encodeBlob",
  "encodeFrameRecord",
  "encodeManifest",
  "executeGc",
  "executeRemoteGc",
  "fetchBlob",
  "findRun",
  "formatBytes",
  "gearEntry",
  "generateSigningKey",
  "getManifest",
  "gitState",
  "inBatch",
  "indexStats",
  "ingestDirectory",
  "ingestStream",
  "ingestTar",
  "isCascacheError",
  "isCommitId",
  "isDigest",
  "looksCompressed",
  "manifestChunks",
  "manifestSize",
  "markIndexStale",
  "materializeToDirectory",
  "materializeToTar",
  "normalizeEntryPath",
  "openLocalStore",
  "openRemoteTier",
  "parseByteSize",
  "parseManifest",
  "parseNamespaceList",
  "parsePrivateKey",
  "parsePublicKey",
  "parseRemoteUrl",
  "parseTierConfigs",
  "parseTrustedKeys",
  "permissionBits",
  "planEvict",
  "planGc",
  "planRemoteGc",
  "prefetchRun",
  "publicKeyOf",
  "putManifest",
  "readAll",
  "readBlobHeader",
  "readChunks",
  "recordRun",
  "storeReport",
  "storeStats",
  "symlinkEscapes",
  "tierId",
  "validateChunkerParams",
  "validateManifest",
  "verifyStore",
  "withDefaultToken",
  "writeFileAtomic",
  "zstdCompressStream",
  "zstdDecompressStream",
  "zstdFrameContentSize",
  "zstdFrameEnd",
]
`);
  });

  it('blocks deep imports through the exports map', () => {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8'));
    // `./format`, `./errors` and `./git` are the light entries for hot paths (the Nx plugin's hooks,
    // `cascache turbo`): the main entry loads the native modules and the cloud SDKs.
    expect(Object.keys(pkg.exports)).toEqual(['.', './format', './errors', './git', './package.json']);
  });

  it('keeps the ./format and ./git entries light: errors and node built-ins only', () => {
    const code = readFileSync(join(__dirname, '..', 'src', 'format.ts'), 'utf8');
    expect([...code.matchAll(/from '([^']+)'/g)].map((m) => m[1])).toEqual(['./errors']);
    const git = readFileSync(join(__dirname, '..', 'src', 'git.ts'), 'utf8');
    expect([...git.matchAll(/from '([^']+)'/g)].map((m) => m[1]).every((m) => m!.startsWith('node:'))).toBe(true);
    expect([...readFileSync(join(__dirname, '..', 'src', 'errors.ts'), 'utf8').matchAll(/from '([^']+)'/g)]).toEqual([]);
  });

  it('keeps library code quiet: no process.env, console, process.exit or stdout writes', () => {
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const d of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, d.name);
        if (d.isDirectory()) walk(p);
        else if (p.endsWith('.ts')) {
          const code = readFileSync(p, 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
          if (/process\.env|console\.|process\.exit|process\.stdout|process\.stderr/.test(code)) offenders.push(p);
        }
      }
    };
    walk(join(__dirname, '..', 'src'));
    expect(offenders).toEqual([]);
  });
});

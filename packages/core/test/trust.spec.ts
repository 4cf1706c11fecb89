// Trust (trust.ts): Ed25519 against RFC 8032's vector, the per-namespace rules, and what they mean
// for the action cache: a writer that holds the shared secret, or a key of its own, cannot place an
// entry that a reader of `main` serves.
import fc from 'fast-check';
import {
  ActionCache,
  computeActionKey,
  createManifest,
  digestOf,
  ErrorCodes,
  generateSigningKey,
  MemoryAcStore,
  MemoryBlobStore,
  parsePrivateKey,
  parsePublicKey,
  publicKeyOf,
  putManifest,
  Trust,
  type AcMissReason,
} from '../src';

const SECRET = Buffer.alloc(32, 7);

// RFC 8032 section 7.1, TEST 1: secret key, public key, and the signature of the empty message.
const RFC_SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const RFC_PUBLIC = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';
const RFC_SIG =
  'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b';
// PKCS#8 (RFC 8410) wrapping of a 32-byte Ed25519 seed: the fixed prefix, then the seed.
const rfcPrivate = `ed25519-private:${Buffer.from(`302e020100300506032b657004220420${RFC_SEED}`, 'hex').toString('base64')}`;
const rfcPublic = `ed25519:${Buffer.from(RFC_PUBLIC, 'hex').toString('base64')}`;

describe('Ed25519 keys', () => {
  it("sign RFC 8032's first test vector byte for byte", () => {
    expect(publicKeyOf(rfcPrivate).publicKey).toBe(rfcPublic);
    const trust = new Trust({ signingKey: rfcPrivate });
    const sig = trust.sign('');
    const [scheme, id, b64] = sig.split(':');
    expect(scheme).toBe('ed25519');
    expect(id).toBe(digestOf(Buffer.from(RFC_PUBLIC, 'hex')).slice(0, 16));
    expect(Buffer.from(b64!, 'base64url').toString('hex')).toBe(RFC_SIG);
    expect(new Trust({ trustedKeys: { main: [rfcPublic] } }).verify('main', '', sig)).toBe('ok');
  });

  it('round-trip through the text keygen prints, and bad text is E_CONFIG without echoing a key', () => {
    const k = generateSigningKey();
    expect(publicKeyOf(k.privateKey)).toEqual({ publicKey: k.publicKey, keyId: k.keyId });
    expect(parsePublicKey(k.publicKey).id).toBe(k.keyId);
    expect(parsePrivateKey(parsePrivateKey(k.privateKey).export({ format: 'pem', type: 'pkcs8' }).toString()).asymmetricKeyType).toBe('ed25519');
    for (const bad of ['', 'ed25519:abc', `ed448:${'A'.repeat(43)}=`, k.privateKey]) expect(() => parsePublicKey(bad)).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
    const truncated = k.privateKey.slice(0, -6);
    try {
      parsePrivateKey(truncated);
      throw new Error('accepted a truncated key');
    } catch (err) {
      expect(err).toMatchObject({ code: ErrorCodes.CONFIG });
      expect((err as Error).message).not.toContain(truncated.slice(16, 40));
    }
    expect(() => new Trust({ trustedKeys: { '../main': [k.publicKey] } })).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
  });
});

describe('Trust rules', () => {
  const main = generateSigningKey();
  const next = generateSigningKey();
  const pr = generateSigningKey();

  it('per namespace: keys when trusted there (or under *), else the secret, else anything', () => {
    const reader = new Trust({ secret: SECRET, trustedKeys: { main: [main.publicKey] } });
    const hmac = new Trust({ secret: SECRET });
    const mainWriter = new Trust({ signingKey: main.privateKey });
    const prWriter = new Trust({ signingKey: pr.privateKey });
    fc.assert(
      fc.property(fc.string(), (payload) => {
        expect(reader.verify('main', payload, mainWriter.sign(payload))).toBe('ok');
        // The secret opens every namespace without keys, and none with keys.
        expect(reader.verify('main', payload, hmac.sign(payload))).toBe('untrusted');
        expect(reader.verify('pr-1', payload, hmac.sign(payload))).toBe('ok');
        expect(reader.verify('main', payload, prWriter.sign(payload))).toBe('untrusted');
        expect(reader.verify('main', payload, 'none')).toBe('untrusted');
        expect(reader.verify('main', `${payload}x`, mainWriter.sign(payload))).toBe('bad-signature');
        expect(reader.verify('pr-1', `${payload}x`, hmac.sign(payload))).toBe('bad-signature');
        expect(new Trust({ trustedKeys: { '*': [pr.publicKey] } }).verify('anything', payload, prWriter.sign(payload))).toBe('ok');
        expect(new Trust().verify('main', payload, 'none')).toBe('ok');
      }),
      { numRuns: 30 },
    );
  });

  it('rotate: two keys trusted for a while, each one accepted', () => {
    const reader = new Trust({ trustedKeys: { main: [main.publicKey, next.publicKey] } });
    for (const k of [main, next]) expect(reader.verify('main', 'p', new Trust({ signingKey: k.privateKey }).sign('p'))).toBe('ok');
    expect(new Trust({ trustedKeys: { main: [next.publicKey] } }).verify('main', 'p', new Trust({ signingKey: main.privateKey }).sign('p'))).toBe('untrusted');
  });

  it('say when a writer would sign what its own namespace does not accept', () => {
    expect(new Trust({ secret: SECRET, trustedKeys: { main: [main.publicKey] } }).writableProblem('main')).toMatch(/no signing key/);
    expect(new Trust({ signingKey: pr.privateKey, trustedKeys: { main: [main.publicKey] } }).writableProblem('main')).toMatch(/does not trust the signing key/);
    expect(new Trust({ signingKey: main.privateKey, trustedKeys: { main: [main.publicKey] } }).writableProblem('main')).toBeNull();
    expect(new Trust({ secret: SECRET, trustedKeys: { main: [main.publicKey] } }).writableProblem('pr-1')).toBeNull();
  });
});

describe('the action cache under namespaces and keys', () => {
  async function output(blobs: MemoryBlobStore, text: string) {
    const content = Buffer.from(text);
    await blobs.put(digestOf(content), content);
    return (await putManifest(blobs, createManifest([{ path: 'dist/main.js', type: 'file', mode: 0o644, size: content.length, chunks: [digestOf(content)] }]))).digest;
  }
  const main = generateSigningKey();
  const pr = generateSigningKey();
  const trustedKeys = { main: [main.publicKey] };

  it('a PR writer with the secret or its own key cannot place a main entry a main reader serves; main then writes over it', async () => {
    const blobs = new MemoryBlobStore();
    const entries = new MemoryAcStore(); // one shared bucket
    const good = await output(blobs, 'good');
    const poison = await output(blobs, 'poison');
    const key = computeActionKey(['nx', 'main', '1234']);
    const warnings: AcMissReason[] = [];
    const reader = new ActionCache({ entries, blobs, secret: null, trust: new Trust({ secret: SECRET, trustedKeys }), onWarning: (w) => warnings.push(w.reason) });

    // It holds the secret and signs with it: its own trust refuses to write into main.
    const prWithSecret = new ActionCache({ entries, blobs, secret: null, trust: new Trust({ secret: SECRET, trustedKeys }) });
    await expect(prWithSecret.put('main', key, { manifest: poison, size: 6 })).rejects.toMatchObject({ code: ErrorCodes.CONFIG });
    // A PR writer configured to trust itself writes anyway (a hostile job does what it likes).
    for (const trust of [new Trust({ secret: SECRET }), new Trust({ signingKey: pr.privateKey })]) {
      await entries.delete('main', key);
      await new ActionCache({ entries, blobs, secret: null, trust }).put('main', key, { manifest: poison, size: 6 });
      expect(await reader.get('main', key)).toBeNull();
    }
    expect(warnings).toEqual(['untrusted', 'untrusted']);

    // Main's writer replaces what can never be served, and main's readers get main's output.
    const mainWriter = new ActionCache({ entries, blobs, secret: null, trust: new Trust({ signingKey: main.privateKey, trustedKeys }) });
    expect((await mainWriter.put('main', key, { manifest: good, size: 4 })).created).toBe(true);
    expect((await reader.get('main', key))?.entry.manifest).toBe(good);
  });

  it('an entry signed for pr-1 and copied into main is not served there', async () => {
    const blobs = new MemoryBlobStore();
    const entries = new MemoryAcStore();
    const m = await output(blobs, 'x');
    const key = computeActionKey(['nx', 'main', '1']);
    const trust = new Trust({ signingKey: main.privateKey, trustedKeys: { '*': [main.publicKey] } });
    const ac = new ActionCache({ entries, blobs, secret: null, trust });
    await ac.put('pr-1', key, { manifest: m, size: 1 });
    entries.tamper('main', key, (await entries.get('pr-1', key))!);
    expect(await ac.get('main', key)).toBeNull();
    expect(ac.check('main', key, (await entries.get('pr-1', key))!)).toBe('mismatch');
  });

  it('adopt keeps a verified entry as signed, on a machine with no key for its namespace', async () => {
    const blobs = new MemoryBlobStore();
    const remote = new MemoryAcStore();
    const local = new MemoryAcStore();
    const m = await output(blobs, 'y');
    const key = computeActionKey(['nx', 'main', '2']);
    await new ActionCache({ entries: remote, blobs, secret: null, trust: new Trust({ signingKey: main.privateKey, trustedKeys }) }).put('main', key, { manifest: m, size: 1 });
    const hit = await new ActionCache({ entries: remote, blobs, secret: null, trust: new Trust({ trustedKeys }) }).get('main', key);
    const reader = new ActionCache({ entries: local, blobs, secret: null, trust: new Trust({ trustedKeys }) });
    expect(await reader.adopt('main', key, hit!.bytes)).toBe(true);
    expect(await local.get('main', key)).toEqual(await remote.get('main', key));
    expect((await reader.get('main', key))?.entry.manifest).toBe(m);
    const forged = Buffer.from(hit!.bytes.toString().replace('"size":1', '"size":2'));
    expect(await reader.adopt('main', computeActionKey(['nx', 'main', '3']), forged)).toBe(false);
    expect(await local.get('main', computeActionKey(['nx', 'main', '3']))).toBeNull();
  });
});

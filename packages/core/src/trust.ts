/**
 * Who may write what a reader serves: how action-cache entries and run records are signed, and which
 * signatures a reader accepts in each namespace.
 *
 * Two schemes:
 * - **HMAC-SHA256** (RFC 2104) under a shared secret. Every machine that can verify can also sign, so
 *   it protects against the bucket, not against a build that holds the secret.
 * - **Ed25519** (RFC 8032, `node:crypto`). Trusted writers (main-branch CI) sign with a private key;
 *   readers verify with public keys and hold no secret. A pull-request build can then write only
 *   where it alone reads: an entry in `main` that no trusted key signed is never served.
 *
 * A signature is a string: `ed25519:<key id>:<base64url signature>`, `hmac-sha256:<64 hex>` or `none`.
 * The key id is the first 16 hex digits of the BLAKE3 digest of the raw 32-byte public key.
 *
 * Which signatures a namespace accepts (first rule that applies):
 * 1. public keys are trusted for it (by name, or under `*`): only Ed25519 signatures by those keys;
 * 2. else a secret is configured: only HMAC signatures under it;
 * 3. else anything (an unsigned local store, as with no secret before).
 * So configuring keys for `main` makes them the only way into `main`, even for a machine that holds
 * the HMAC secret.
 *
 * Key text formats (printed by `cascache keygen`): public `ed25519:<base64 of the raw 32 bytes>`;
 * private `ed25519-private:<base64 of PKCS#8 DER>` or a PKCS#8 PEM block.
 */
import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, sign as edSign, timingSafeEqual, verify as edVerify, type KeyObject } from 'node:crypto';
import { digestOf } from './digest';
import { CascacheError, ErrorCodes } from './errors';
import { NAMESPACE_RE } from './format';

/** Shortest accepted HMAC secret, in bytes. */
export const MIN_SECRET_BYTES = 32;

/** What a reader concluded about a signature. */
export type SignatureCheck = 'ok' | 'bad-signature' | 'untrusted';

/** How entries written by this process are signed. */
export type SignatureScheme = 'ed25519' | 'hmac-sha256' | 'none';

/** Options for {@link Trust}. */
export interface TrustOptions {
  /** HMAC-SHA256 secret, at least 32 bytes, or null. */
  secret?: Uint8Array | null;
  /** Ed25519 private key (text as `cascache keygen` prints it, or a KeyObject): signs what this process writes. */
  signingKey?: string | KeyObject | null;
  /**
   * Ed25519 public keys (`ed25519:<base64>`) trusted per namespace; `*` applies to every namespace.
   * Two keys for one namespace is how a key is rotated.
   */
  trustedKeys?: Readonly<Record<string, readonly string[]>>;
}

interface PublicKeyRef {
  id: string;
  key: KeyObject;
}

const config = (message: string): CascacheError => new CascacheError(ErrorCodes.CONFIG, message);

/** Raw 32-byte Ed25519 public key of a key object. */
function rawPublicKey(key: KeyObject): Buffer {
  const x = key.export({ format: 'jwk' }).x;
  if (key.asymmetricKeyType !== 'ed25519' || typeof x !== 'string') throw config('only Ed25519 keys are supported');
  return Buffer.from(x, 'base64url');
}

/** Key id: the first 16 hex digits of BLAKE3(raw public key). */
function keyIdOf(raw: Uint8Array): string {
  return digestOf(raw).slice(0, 16);
}

/**
 * Parses a public key as `cascache keygen` prints it (`ed25519:<base64 of 32 bytes>`).
 * @throws CascacheError `E_CONFIG` for anything else.
 */
export function parsePublicKey(text: string): { id: string; key: KeyObject; text: string } {
  const m = /^ed25519:([A-Za-z0-9+/_-]{43}=?)$/.exec(typeof text === 'string' ? text.trim() : '');
  const raw = m ? Buffer.from(m[1]!.replace(/-/g, '+').replace(/_/g, '/'), 'base64') : null;
  if (!raw || raw.length !== 32) throw config(`a trusted key must be "ed25519:" and the base64 of 32 bytes (as \`cascache keygen\` prints it), got ${JSON.stringify(String(text).slice(0, 60))}`);
  const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
  return { id: keyIdOf(raw), key, text: `ed25519:${raw.toString('base64')}` };
}

/**
 * Parses a private key: `ed25519-private:<base64 PKCS#8 DER>` or a PKCS#8 PEM block.
 * @throws CascacheError `E_CONFIG` when it is neither, or not an Ed25519 key. The message never
 * contains the key.
 */
export function parsePrivateKey(text: string | KeyObject): KeyObject {
  if (typeof text !== 'string') {
    if (text.type !== 'private' || text.asymmetricKeyType !== 'ed25519') throw config('the signing key must be an Ed25519 private key');
    return text;
  }
  let key: KeyObject;
  try {
    const t = text.trim();
    key = t.startsWith('ed25519-private:')
      ? createPrivateKey({ key: Buffer.from(t.slice('ed25519-private:'.length), 'base64'), format: 'der', type: 'pkcs8' })
      : createPrivateKey({ key: t, format: 'pem' });
  } catch {
    throw config('the signing key must be "ed25519-private:<base64>" or a PKCS#8 PEM block, as `cascache keygen` prints it');
  }
  if (key.asymmetricKeyType !== 'ed25519') throw config(`the signing key must be an Ed25519 key, got ${key.asymmetricKeyType}`);
  return key;
}

/** A new Ed25519 key pair as text: what `cascache keygen` prints. */
export function generateSigningKey(): { privateKey: string; publicKey: string; keyId: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const raw = rawPublicKey(publicKey);
  return {
    privateKey: `ed25519-private:${privateKey.export({ format: 'der', type: 'pkcs8' }).toString('base64')}`,
    publicKey: `ed25519:${raw.toString('base64')}`,
    keyId: keyIdOf(raw),
  };
}

/** The public key (`ed25519:<base64>`) and key id of a private key. */
export function publicKeyOf(privateKey: string | KeyObject): { publicKey: string; keyId: string } {
  const raw = rawPublicKey(createPublicKey(parsePrivateKey(privateKey)));
  return { publicKey: `ed25519:${raw.toString('base64')}`, keyId: keyIdOf(raw) };
}

/**
 * Signs and verifies for one process: what it writes, and what it accepts per namespace (see the
 * module comment for the rules).
 */
export class Trust {
  /** How {@link sign} signs: Ed25519 when a signing key is set, else HMAC when a secret is, else `none`. */
  readonly scheme: SignatureScheme;
  /** Key id of the signing key, or null. */
  readonly signingKeyId: string | null;
  private readonly secret: Buffer | null;
  private readonly signingKey: KeyObject | null;
  private readonly keys = new Map<string, PublicKeyRef[]>();

  /**
   * @throws CascacheError `E_CONFIG` for a secret under 32 bytes, a key that does not parse, or a
   * malformed namespace name in `trustedKeys`.
   */
  constructor(options: TrustOptions = {}) {
    const secret = options.secret ?? null;
    if (secret !== null && secret.length < MIN_SECRET_BYTES) {
      throw config(`the action-cache signing secret must be at least ${MIN_SECRET_BYTES} bytes, got ${secret.length}`);
    }
    this.secret = secret === null ? null : Buffer.from(secret);
    this.signingKey = options.signingKey ? parsePrivateKey(options.signingKey) : null;
    this.signingKeyId = this.signingKey ? publicKeyOf(this.signingKey).keyId : null;
    for (const [namespace, list] of Object.entries(options.trustedKeys ?? {})) {
      if (namespace !== '*' && !NAMESPACE_RE.test(namespace)) throw config(`trusted keys name an invalid namespace ${JSON.stringify(namespace.slice(0, 80))}`);
      if (!Array.isArray(list)) throw config(`trusted keys for ${namespace} must be a list of "ed25519:..." keys`);
      this.keys.set(
        namespace,
        list.map((t) => parsePublicKey(t)),
      );
    }
    this.scheme = this.signingKey ? 'ed25519' : this.secret ? 'hmac-sha256' : 'none';
  }

  /** True when anything is verified: a secret is set or some key is trusted. */
  get verifies(): boolean {
    return this.secret !== null || this.keys.size > 0;
  }

  /** The public keys trusted for `namespace` (its own and `*`), as key ids. Empty: no key rule applies. */
  keyIdsFor(namespace: string): string[] {
    return this.keysFor(namespace).map((k) => k.id);
  }

  /** How `namespace` is verified: by trusted keys, by the secret, or not at all. */
  ruleFor(namespace: string): 'keys' | 'secret' | 'none' {
    return this.keysFor(namespace).length > 0 ? 'keys' : this.secret ? 'secret' : 'none';
  }

  /**
   * Whether what this process signs would be accepted by a reader with the same trust in
   * `namespace`; else why not (to refuse a writer's configuration before it writes entries nobody reads).
   */
  writableProblem(namespace: string): string | null {
    const rule = this.ruleFor(namespace);
    if (rule === 'keys' && (this.signingKeyId === null || !this.keyIdsFor(namespace).includes(this.signingKeyId))) {
      return this.signingKeyId === null
        ? `namespace ${namespace} accepts only entries signed by its trusted keys, and no signing key is set (CASCACHE_SIGNING_KEY)`
        : `namespace ${namespace} does not trust the signing key ${this.signingKeyId} (it trusts ${this.keyIdsFor(namespace).join(', ')})`;
    }
    return null;
  }

  /** Signs canonical bytes: `ed25519:<id>:<base64url>`, `hmac-sha256:<hex>` or `none`. */
  sign(payload: string): string {
    if (this.signingKey) return `ed25519:${this.signingKeyId}:${edSign(null, Buffer.from(payload, 'utf8'), this.signingKey).toString('base64url')}`;
    if (this.secret) return `hmac-sha256:${createHmac('sha256', this.secret).update(payload, 'utf8').digest('hex')}`;
    return 'none';
  }

  /**
   * Checks `sig` over `payload` as a reader of `namespace`. `untrusted`: signed in a way this reader
   * does not accept there (another scheme, or a key it does not trust for that namespace);
   * `bad-signature`: the scheme is accepted but the signature fails (altered, another secret).
   */
  verify(namespace: string, payload: string, sig: string): SignatureCheck {
    const rule = this.ruleFor(namespace);
    if (rule === 'none') return 'ok';
    if (rule === 'keys') {
      const m = /^ed25519:([0-9a-f]{16}):([A-Za-z0-9_-]{86})$/.exec(sig);
      if (!m) return 'untrusted';
      const key = this.keysFor(namespace).find((k) => k.id === m[1]);
      if (!key) return 'untrusted';
      return edVerify(null, Buffer.from(payload, 'utf8'), key.key, Buffer.from(m[2]!, 'base64url')) ? 'ok' : 'bad-signature';
    }
    if (!sig.startsWith('hmac-sha256:')) return sig.startsWith('ed25519:') ? 'untrusted' : 'bad-signature';
    const expected = Buffer.from(`hmac-sha256:${createHmac('sha256', this.secret!).update(payload, 'utf8').digest('hex')}`, 'utf8');
    const actual = Buffer.from(sig, 'utf8');
    return expected.length === actual.length && timingSafeEqual(expected, actual) ? 'ok' : 'bad-signature';
  }

  private keysFor(namespace: string): PublicKeyRef[] {
    const own = this.keys.get(namespace) ?? [];
    const all = this.keys.get('*') ?? [];
    return own.length + all.length === 0 ? [] : [...own, ...all];
  }
}

/**
 * Trusted keys as configured: a JSON object of namespace (or `*`) to a list of `ed25519:...` keys,
 * as text (an environment variable) or already parsed (a config file). Keys are checked here.
 * @throws CascacheError `E_CONFIG` naming `source` for anything else.
 */
export function parseTrustedKeys(value: unknown, source: string): Record<string, string[]> {
  let parsed = value;
  if (typeof value === 'string') {
    try {
      parsed = JSON.parse(value);
    } catch {
      throw config(`${source} must be JSON such as {"main": ["ed25519:..."]}`);
    }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw config(`${source} must be an object of namespace -> ["ed25519:...", ...]`);
  const out: Record<string, string[]> = {};
  for (const [namespace, keys] of Object.entries(parsed)) {
    if (namespace !== '*' && !NAMESPACE_RE.test(namespace)) throw config(`${source} names an invalid namespace ${JSON.stringify(namespace.slice(0, 80))}`);
    if (!Array.isArray(keys) || keys.length === 0) throw config(`${source}: the keys of ${namespace} must be a non-empty list of "ed25519:..." keys`);
    out[namespace] = keys.map((k) => {
      try {
        return parsePublicKey(k).text;
      } catch (err) {
        throw config(`${source}: ${(err as Error).message}`);
      }
    });
  }
  return out;
}

/**
 * A list of namespaces in lookup order: `main,pr-123` (text) or a list. Duplicates are dropped.
 * @throws CascacheError `E_CONFIG` naming `source` for an empty list or a malformed name.
 */
export function parseNamespaceList(value: unknown, source: string): string[] {
  const list = typeof value === 'string' ? value.split(',').map((s) => s.trim()).filter(Boolean) : value;
  if (!Array.isArray(list) || list.length === 0) throw config(`${source} must list one or more namespaces, e.g. main,pr-123`);
  for (const n of list) if (typeof n !== 'string' || !NAMESPACE_RE.test(n)) throw config(`${source}: ${JSON.stringify(String(n).slice(0, 80))} is not a namespace (1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)`);
  return [...new Set(list as string[])];
}

/**
 * Bearer-token authorization. Read-write and read-only tokens are distinct (DESIGN.md trust model):
 * a read-only token can never write a key that a trusted build later reads.
 *
 * Tokens are compared as SHA-256 digests with `timingSafeEqual`, so the comparison takes the same
 * time whatever the token's length or content.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';

/**
 * `admin` may also replace or delete action-cache entries on the chunk API, which breaks write-once:
 * no token has it unless configured (`CASCACHE_TOKENS_ADMIN`).
 */
export type Access = 'read' | 'write' | 'admin';

/** Who a request is, once authorized. */
export interface Principal {
  /** `write` tokens may also read; `admin` tokens may do anything. */
  access: Access;
  /** Recorded as the writer of action-cache entries: never the token itself. */
  name: string;
  /**
   * For a namespace-scoped token: the namespaces it reads, in order, and the one it writes (null:
   * none). Absent: the server's own namespaces, and any namespace on the chunk and turbo APIs.
   */
  namespaces?: { read: string[]; write: string | null };
}

/**
 * A token limited to namespaces: a pull-request build's token reads `main` then `pr-123` and writes
 * only `pr-123`, so it can never place an entry that main's builds read.
 */
export interface ScopedToken {
  token: string;
  /** Recorded as the writer of what it stores. Default `scoped-token-<index>`. */
  name?: string;
  /** Namespaces it reads, in lookup order. Its write namespace is read last when not listed. */
  read: string[];
  /** The one namespace it writes, or absent for a read-only token. */
  write?: string;
}

/** True when `principal` may read `namespace` (unscoped tokens read every namespace). */
export function readsNamespace(principal: Principal, namespace: string): boolean {
  return !principal.namespaces || principal.namespaces.read.includes(namespace);
}

/** True when `principal` may write `namespace` (unscoped write tokens write every namespace). */
export function writesNamespace(principal: Principal, namespace: string): boolean {
  return principal.access !== 'read' && (!principal.namespaces || principal.namespaces.write === namespace);
}

export interface TokenConfig {
  /** Tokens that may read and write. */
  readWrite?: string[];
  /** Tokens that may only read. */
  readOnly?: string[];
  /** Tokens that may also replace and delete action-cache entries (off unless configured). */
  admin?: string[];
  /** Tokens limited to namespaces (read list, write namespace). */
  scoped?: ScopedToken[];
}

export type AuthResult = { ok: true; principal: Principal } | { ok: false; status: 401 | 403 };

const digest = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest();

export class Authorizer {
  private readonly rw: Buffer[];
  private readonly ro: Buffer[];
  private readonly admin: Buffer[];
  private readonly scoped: Array<{ digest: Buffer; principal: Principal }>;

  constructor(tokens: TokenConfig = {}) {
    this.rw = (tokens.readWrite ?? []).map(digest);
    this.ro = (tokens.readOnly ?? []).map(digest);
    this.admin = (tokens.admin ?? []).map(digest);
    this.scoped = (tokens.scoped ?? []).map((t, i) => {
      const write = t.write ?? null;
      const read = write !== null && !t.read.includes(write) ? [...t.read, write] : [...t.read];
      return { digest: digest(t.token), principal: { access: write === null ? 'read' : 'write', name: t.name ?? `scoped-token-${i}`, namespaces: { read, write } } };
    });
  }

  /** True when no token is configured: every request is a writer (loopback-only servers), never an admin. */
  get open(): boolean {
    return this.rw.length === 0 && this.ro.length === 0 && this.admin.length === 0 && this.scoped.length === 0;
  }

  /**
   * Checks an `Authorization` header for the access a route needs.
   * 401 for a missing or unknown token, 403 for a read-only token on a write or a non-admin token on
   * an admin route.
   */
  check(header: string | undefined, needed: Access): AuthResult {
    if (this.open) return needed === 'admin' ? { ok: false, status: 403 } : { ok: true, principal: { access: 'write', name: 'anonymous' } };
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!m) return { ok: false, status: 401 };
    const d = digest(m[1]!);
    // Check every configured token, so timing does not reveal which list (or index) matched.
    let rwIndex = -1;
    let roIndex = -1;
    let adminIndex = -1;
    this.rw.forEach((t, i) => {
      if (timingSafeEqual(t, d)) rwIndex = i;
    });
    this.ro.forEach((t, i) => {
      if (timingSafeEqual(t, d)) roIndex = i;
    });
    this.admin.forEach((t, i) => {
      if (timingSafeEqual(t, d)) adminIndex = i;
    });
    let scoped: Principal | null = null;
    for (const t of this.scoped) if (timingSafeEqual(t.digest, d)) scoped = t.principal;
    if (adminIndex >= 0) return { ok: true, principal: { access: 'admin', name: `admin-token-${adminIndex}` } };
    if (rwIndex >= 0) return needed === 'admin' ? { ok: false, status: 403 } : { ok: true, principal: { access: 'write', name: `rw-token-${rwIndex}` } };
    if (roIndex >= 0) {
      return needed === 'write' ? { ok: false, status: 403 } : { ok: true, principal: { access: 'read', name: `ro-token-${roIndex}` } };
    }
    if (scoped) return needed === 'admin' || (needed === 'write' && scoped.access === 'read') ? { ok: false, status: 403 } : { ok: true, principal: scoped };
    return { ok: false, status: 401 };
  }
}

/** True for 127.0.0.0/8, ::1 and `localhost`. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host === '[::1]';
}

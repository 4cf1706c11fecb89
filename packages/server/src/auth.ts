/**
 * Bearer-token authorization. Read-write and read-only tokens are distinct (DESIGN.md trust model):
 * a read-only token can never write a key that a trusted build later reads.
 *
 * Tokens are compared as SHA-256 digests with `timingSafeEqual`, so the comparison takes the same
 * time whatever the token's length or content.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

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
}

export interface TokenConfig {
  /** Tokens that may read and write. */
  readWrite?: string[];
  /** Tokens that may only read. */
  readOnly?: string[];
  /** Tokens that may also replace and delete action-cache entries (off unless configured). */
  admin?: string[];
}

export type AuthResult = { ok: true; principal: Principal } | { ok: false; status: 401 | 403 };

const digest = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest();

export class Authorizer {
  private readonly rw: Buffer[];
  private readonly ro: Buffer[];
  private readonly admin: Buffer[];

  constructor(tokens: TokenConfig = {}) {
    this.rw = (tokens.readWrite ?? []).map(digest);
    this.ro = (tokens.readOnly ?? []).map(digest);
    this.admin = (tokens.admin ?? []).map(digest);
  }

  /** True when no token is configured: every request is a writer (loopback-only servers), never an admin. */
  get open(): boolean {
    return this.rw.length === 0 && this.ro.length === 0 && this.admin.length === 0;
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
    if (adminIndex >= 0) return { ok: true, principal: { access: 'admin', name: `admin-token-${adminIndex}` } };
    if (rwIndex >= 0) return needed === 'admin' ? { ok: false, status: 403 } : { ok: true, principal: { access: 'write', name: `rw-token-${rwIndex}` } };
    if (roIndex >= 0) {
      return needed === 'write' ? { ok: false, status: 403 } : { ok: true, principal: { access: 'read', name: `ro-token-${roIndex}` } };
    }
    return { ok: false, status: 401 };
  }
}

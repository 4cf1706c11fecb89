/**
 * Circuit breaker around an object store: after `threshold` consecutive retryable failures the tier
 * is skipped for `cooldownMs` (calls fail fast with `E_UNAVAILABLE`, no network), then one call is
 * let through to probe it. A build never waits on a remote that is known to be down, and the caller
 * is told once per opening (`onOpen`), not once per request. A timeout (an error with
 * `details.timeout`: the remote accepted and went quiet) opens it at once: each such failure has
 * already cost the build the whole timeout, and a hung server rarely answers the next call.
 */
import { CascacheError, ErrorCodes, isCascacheError } from '../errors';
import type { ByteRange, ObjectInfo, ObjectStore } from './object-store';

/** Options for {@link BreakerObjectStore}. */
export interface BreakerOptions {
  /** Consecutive retryable failures that open the breaker. Default 3. */
  threshold?: number;
  /** How long an open breaker skips the tier, ms. Default 30000. */
  cooldownMs?: number;
  /** Told when the breaker opens, with the failure that opened it. */
  onOpen?: (store: string, error: CascacheError, cooldownMs: number) => void;
  /** Told when a probe succeeds and the breaker closes again. */
  onClose?: (store: string) => void;
  /** Clock, ms (tests). */
  now?: () => number;
}

/** The breaker itself, for any remote client: `guard` every call; `reset` on an explicit flush. */
export class CircuitBreaker {
  private failures = 0;
  private openUntil = 0;
  private readonly threshold: number;
  private readonly cooldown: number;
  private readonly now: () => number;

  constructor(
    readonly name: string,
    private readonly options: BreakerOptions = {},
  ) {
    this.threshold = options.threshold ?? 3;
    this.cooldown = options.cooldownMs ?? 30000;
    this.now = options.now ?? Date.now;
  }

  /** The failure that last opened the breaker (its message), or null while it is closed. */
  lastFailure: string | null = null;

  /** True while calls are being skipped. */
  get isOpen(): boolean {
    return this.openUntil > this.now();
  }

  /** Closes the breaker: the next call goes to the network (an explicit flush by the user). */
  reset(): void {
    this.failures = 0;
    this.openUntil = 0;
    this.lastFailure = null;
  }

  /** Runs `call` unless the breaker is open. @throws `E_UNAVAILABLE` (retryable) while open. */
  async guard<T>(call: () => Promise<T>): Promise<T> {
    this.check();
    try {
      const r = await call();
      this.succeeded();
      return r;
    } catch (err) {
      this.failed(err);
      throw err;
    }
  }

  /** Throws while open (for streaming calls that guard their own success and failure). */
  check(): void {
    if (this.openUntil > this.now()) {
      throw new CascacheError(ErrorCodes.UNAVAILABLE, `${this.name} is skipped until ${new Date(this.openUntil).toISOString()} after repeated failures`, {
        retryable: true,
        details: { breaker: 'open' },
      });
    }
  }

  succeeded(): void {
    const wasOpen = this.failures >= this.threshold;
    this.failures = 0;
    this.openUntil = 0;
    this.lastFailure = null;
    if (wasOpen) this.options.onClose?.(this.name);
  }

  failed(err: unknown): void {
    if (isCascacheError(err) && !err.retryable) return; // unclassified errors count as failures too
    this.failures++;
    if (isCascacheError(err) && (err.details as { timeout?: unknown } | undefined)?.timeout === true) this.failures = Math.max(this.failures, this.threshold);
    if (this.failures >= this.threshold) {
      const first = this.openUntil === 0 || this.failures === this.threshold;
      this.openUntil = this.now() + this.cooldown;
      const cause = isCascacheError(err) ? err : new CascacheError(ErrorCodes.UNAVAILABLE, `${this.name}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
      this.lastFailure = cause.message;
      if (first) this.options.onOpen?.(this.name, cause, this.cooldown);
    }
  }
}

/** An object store behind a {@link CircuitBreaker}. */
export class BreakerObjectStore implements ObjectStore {
  readonly name: string;
  readonly breaker: CircuitBreaker;

  constructor(
    private readonly inner: ObjectStore,
    options: BreakerOptions = {},
  ) {
    this.name = inner.name;
    this.breaker = new CircuitBreaker(inner.name, options);
  }

  /** True while calls are being skipped. */
  get isOpen(): boolean {
    return this.breaker.isOpen;
  }

  /** Closes the breaker: the next call goes to the network. */
  reset(): void {
    this.breaker.reset();
  }

  get(key: string, range?: ByteRange): Promise<Buffer | null> {
    return this.breaker.guard(() => this.inner.get(key, range));
  }

  /** Warms the inner store; failures are ignored and do not count against the breaker. */
  async warm(): Promise<void> {
    await this.inner.warm?.().catch(() => undefined);
  }

  put(key: string, body: Buffer, options?: { ifAbsent?: boolean }): Promise<{ created: boolean }> {
    return this.breaker.guard(() => this.inner.put(key, body, options));
  }

  delete(key: string): Promise<boolean> {
    return this.breaker.guard(() => this.inner.delete(key));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.breaker.check();
    try {
      for await (const o of this.inner.list(prefix)) yield o;
      this.breaker.succeeded();
    } catch (err) {
      this.breaker.failed(err);
      throw err;
    }
  }
}

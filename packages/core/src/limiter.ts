/**
 * A counting semaphore for bounding concurrent async work (puts in flight, files open). Kept tiny and
 * local: p-limit is ESM-only and this is the one primitive the store wrappers need.
 */
export class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  /** @param limit most tasks running at once (>= 1). */
  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`);
  }

  /** Runs `task` when a slot is free; resolves or rejects with its result. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

// Shared run records (remote/runs.ts): signed round trips, rejection of anything altered, and object
// keys that list newest first.
import fc from 'fast-check';
import { digestOf } from '../src';
import { decodeSharedRun, encodeSharedRun, runObjectKey, runPrefix, type SharedRun } from '../src/remote/runs';

const SECRET = Buffer.alloc(32, 5);

const arbRun: fc.Arbitrary<SharedRun> = fc.record({
  tool: fc.constantFrom('nx', 'turbo', 'cascache cache'),
  namespace: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/),
  branch: fc.option(fc.string({ minLength: 1, maxLength: 40 }), { nil: null }),
  commit: fc.option(fc.stringMatching(/^[0-9a-f]{40}$/), { nil: null }),
  targets: fc.array(fc.string({ maxLength: 20 }), { maxLength: 4 }),
  startTime: fc.integer({ min: 0, max: 9_999_999_999_999 }),
  keys: fc.array(fc.string().map((s) => digestOf(s)), { maxLength: 30 }),
});

describe('shared run records', () => {
  it('round-trip through their signed encoding', () => {
    fc.assert(
      fc.property(arbRun, (run) => {
        expect(decodeSharedRun(encodeSharedRun(run, SECRET), SECRET)).toEqual(run);
      }),
    );
  });

  it('are rejected when any byte of the body changes, or under another secret', () => {
    fc.assert(
      fc.property(arbRun, fc.nat(), (run, at) => {
        const bytes = encodeSharedRun(run, SECRET);
        expect(decodeSharedRun(bytes, Buffer.alloc(32, 6))).toBeNull();
        const changed = Buffer.from(bytes);
        const i = at % changed.length;
        changed[i] = changed[i]! ^ 0x01;
        // A flipped bit either breaks the JSON, changes a field (the MAC fails) or the MAC itself.
        expect(decodeSharedRun(changed, SECRET)).toBeNull();
      }),
    );
  });

  it('list newest first under one prefix per tool and branch', () => {
    const run = (startTime: number): SharedRun => ({ tool: 'nx', namespace: 'default', branch: 'feature/ünï', commit: null, targets: ['build'], startTime, keys: [] });
    const keys = [run(1_700_000_000_000), run(1_700_000_000_001), run(5)].map(runObjectKey);
    expect([...keys].sort()).toEqual([keys[1], keys[0], keys[2]]);
    for (const k of keys) expect(k.startsWith(runPrefix('nx', 'feature/ünï'))).toBe(true);
    expect(runPrefix('nx', 'main')).not.toBe(runPrefix('nx', 'feature/ünï'));
    expect(runPrefix('cascache cache', null)).toBe('v1/runs/cascache_cache/-/');
    expect(runObjectKey(run(5))).toBe(runObjectKey(run(5))); // a retried upload overwrites
  });
});

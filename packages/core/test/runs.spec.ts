// Shared run records (remote/runs.ts): signed round trips, rejection of anything altered, and object
// keys that list newest first.
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { canonicalJson, digestOf, generateSigningKey, Trust } from '../src';
import { decodeSharedRun, encodeSharedRun, runObjectKey, runPrefix, type SharedRun } from '../src/remote/runs';

const SECRET = Buffer.alloc(32, 5);
const HMAC = new Trust({ secret: SECRET });
const KEY = generateSigningKey();
const SIGNER = new Trust({ signingKey: KEY.privateKey, trustedKeys: { '*': [KEY.publicKey] } });

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
        expect(decodeSharedRun(encodeSharedRun(run, HMAC), HMAC)).toEqual(run);
        expect(decodeSharedRun(encodeSharedRun(run, SIGNER), SIGNER)).toEqual(run);
        // A reader that trusts a key for the run's namespace takes only that key's records.
        expect(decodeSharedRun(encodeSharedRun(run, HMAC), SIGNER)).toBeNull();
        expect(decodeSharedRun(encodeSharedRun(run, SIGNER), new Trust({ trustedKeys: { [run.namespace]: [generateSigningKey().publicKey] } }))).toBeNull();
      }),
    );
  });

  it('are rejected when any byte of the body changes, or under another secret', () => {
    fc.assert(
      fc.property(arbRun, fc.nat(), (run, at) => {
        const bytes = encodeSharedRun(run, HMAC);
        expect(decodeSharedRun(bytes, new Trust({ secret: Buffer.alloc(32, 6) }))).toBeNull();
        for (const [b, trust] of [[bytes, HMAC], [encodeSharedRun(run, SIGNER), SIGNER]] as const) {
          const changed = Buffer.from(b);
          const i = at % changed.length;
          changed[i] = changed[i]! ^ 0x01;
          // A flipped bit either breaks the JSON, changes a field (the signature fails) or the signature itself.
          expect(decodeSharedRun(changed, trust)).toBeNull();
        }
      }),
    );
  });

  it('written before `sig` (a bare hex `mac`) are still read under the same secret', () => {
    const run: SharedRun = { tool: 'nx', namespace: 'default', branch: 'main', commit: null, targets: ['build'], startTime: 1, keys: [digestOf('a')] };
    const mac = createHmac('sha256', SECRET).update(canonicalJson(run), 'utf8').digest('hex');
    const legacy = Buffer.from(canonicalJson({ ...run, mac }), 'utf8');
    expect(decodeSharedRun(legacy, HMAC)).toEqual(run);
    expect(decodeSharedRun(legacy, new Trust({ secret: Buffer.alloc(32, 6) }))).toBeNull();
    expect(decodeSharedRun(Buffer.from(canonicalJson({ ...run, mac: mac.replace(/^./, (c) => (c === '0' ? '1' : '0')) }), 'utf8'), HMAC)).toBeNull();
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

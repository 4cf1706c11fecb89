import fc from 'fast-check';
import { createManifest, digestOf, encodeManifest, ErrorCodes, MANIFEST_FORMAT, parseManifest, symlinkEscapes, type ManifestEntry } from '../src';

const D = digestOf('chunk');

describe('manifest invariants', () => {
  it('encodes canonically: the same entries in any order give the same bytes and digest (property)', () => {
    const entries: ManifestEntry[] = [
      { path: 'a', type: 'dir', mode: 0o755 },
      { path: 'a/b.js', type: 'file', mode: 0o644, size: 5, chunks: [D] },
      { path: 'a/ü név.txt', type: 'file', mode: 0o600, size: 0, chunks: [] },
      { path: 'bin', type: 'symlink', target: 'a/b.js' },
      { path: 'z', type: 'dir', mode: 0o700 },
    ];
    const reference = encodeManifest(createManifest(entries, { code: 0 }));
    fc.assert(
      fc.property(fc.shuffledSubarray(entries, { minLength: entries.length }), (shuffled) => {
        return encodeManifest(createManifest(shuffled, { code: 0 })).equals(reference);
      }),
    );
    expect(reference.toString()).toContain(`"format":"${MANIFEST_FORMAT}"`);
    expect(parseManifest(reference)).toEqual(createManifest(entries, { code: 0 }));
  });

  it.each([
    ['absolute path', [{ path: '/etc/passwd', type: 'file', mode: 0o644, size: 0, chunks: [] }]],
    ['dot-dot', [{ path: 'a/../../x', type: 'file', mode: 0o644, size: 0, chunks: [] }]],
    ['empty segment', [{ path: 'a//b', type: 'dir', mode: 0o755 }]],
    ['backslash', [{ path: 'a\\..\\b', type: 'dir', mode: 0o755 }]],
    ['NUL', [{ path: 'a\0b', type: 'dir', mode: 0o755 }]],
    ['duplicate', [{ path: 'a', type: 'dir', mode: 0o755 }, { path: 'a', type: 'dir', mode: 0o700 }]],
    ['file below a file', [{ path: 'a', type: 'file', mode: 0o644, size: 0, chunks: [] }, { path: 'a/b', type: 'dir', mode: 0o755 }]],
    ['file below a symlink', [{ path: 'l', type: 'symlink', target: 'x' }, { path: 'l/evil', type: 'file', mode: 0o644, size: 0, chunks: [] }]],
    ['absolute symlink', [{ path: 'l', type: 'symlink', target: '/etc' }]],
    ['escaping symlink', [{ path: 'd/l', type: 'symlink', target: '../../etc' }]],
    ['bad mode', [{ path: 'a', type: 'dir', mode: 0o4755 }]],
    ['bad chunk digest', [{ path: 'a', type: 'file', mode: 0o644, size: 1, chunks: ['XYZ'] }]],
    ['size without chunks', [{ path: 'a', type: 'file', mode: 0o644, size: 10, chunks: [] }]],
    ['unknown type', [{ path: 'a', type: 'fifo' }]],
    ['extra field', [{ path: 'a', type: 'dir', mode: 0o755, owner: 'root' }]],
  ])('rejects %s with E_BAD_INPUT', (_, entries) => {
    expect(() => createManifest(entries as ManifestEntry[])).toThrow(expect.objectContaining({ code: ErrorCodes.BAD_INPUT }));
  });

  it('rejects malformed JSON and unknown formats', () => {
    expect(() => parseManifest(Buffer.from('{nope'))).toThrow(expect.objectContaining({ code: ErrorCodes.BAD_INPUT }));
    expect(() => parseManifest(Buffer.from('{"format":"other","entries":[]}'))).toThrow(expect.objectContaining({ code: ErrorCodes.BAD_INPUT }));
    expect(() => parseManifest(Buffer.from(`{"format":"${MANIFEST_FORMAT}","entries":[{"path":"b","type":"dir","mode":493},{"path":"a","type":"dir","mode":493}]}`))).toThrow(
      expect.objectContaining({ message: expect.stringContaining('not sorted') }),
    );
  });

  it('resolves symlink chains through the tree, as the kernel would', () => {
    const links = new Map([
      ['d/l', '..'],
      ['up', 'd/l/../..'],
      ['ok', 'd/l/x'],
      ['loop1', 'loop2'],
      ['loop2', 'loop1'],
    ]);
    expect(symlinkEscapes('up', 'd/l/../..', links)).toBe(true); // d/l is the root, so ../.. leaves it
    expect(symlinkEscapes('ok', 'd/l/x', links)).toBe(false);
    expect(symlinkEscapes('d/l', '..', links)).toBe(false);
    expect(symlinkEscapes('loop1', 'loop2', links)).toBe(true); // ELOOP counts as unsafe
    expect(symlinkEscapes('a/b/c', '../../x', new Map())).toBe(false);
    expect(symlinkEscapes('a/b/c', '../../../x', new Map())).toBe(true);
  });

  it('allows dangling links inside the root (node_modules/.bin style)', () => {
    expect(() => createManifest([{ path: 'node_modules/.bin/tsc', type: 'symlink', target: '../typescript/bin/tsc' }])).not.toThrow();
  });
});

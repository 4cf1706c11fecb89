/**
 * Canonical JSON after RFC 8785 (JSON Canonicalization Scheme): object members sorted by name in
 * UTF-16 code-unit order, no insignificant whitespace, strings and numbers as ECMAScript
 * `JSON.stringify` writes them (which is what RFC 8785 specifies). Used wherever bytes are hashed or
 * signed (manifests, action-cache entries), so equal values always give equal bytes.
 *
 * Only the JSON data model is accepted: `undefined` members are dropped (as JSON.stringify does);
 * non-finite numbers, functions, symbols and bigints are rejected.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError('canonical JSON has no representation for non-finite numbers');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
  if (typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj)
      .filter((k) => obj[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
  }
  throw new TypeError(`canonical JSON cannot encode a ${typeof value}`);
}

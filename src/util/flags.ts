/** A small, strict command-line flag parser: --name value, --name=value, booleans, repeats. */
import { UsageError } from '../errors';
import { Bound, boundText, inBound } from './limits';

export interface FlagSpec {
  /** Flags that take no value. */
  booleans?: string[];
  /** Flags that take a value. */
  values?: string[];
  /** Value flags that may repeat (collected into arrays). */
  repeated?: string[];
  /** Value flags whose value is optional (`--progress` or `--progress=3`). */
  optionalValue?: string[];
}

export interface ParsedFlags {
  flags: Map<string, string | true>;
  lists: Map<string, string[]>;
  positionals: string[];
  /** Arguments after a bare `--`. */
  rest: string[];
}

export function parseFlags(argv: string[], spec: FlagSpec): ParsedFlags {
  const booleans = new Set(spec.booleans ?? []);
  const values = new Set([...(spec.values ?? []), ...(spec.repeated ?? [])]);
  const repeated = new Set(spec.repeated ?? []);
  const optional = new Set(spec.optionalValue ?? []);
  const out: ParsedFlags = { flags: new Map(), lists: new Map(), positionals: [], rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.rest = argv.slice(i + 1);
      break;
    }
    if (!a.startsWith('--') || a === '-') {
      out.positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    let value: string | true;
    if (booleans.has(name)) {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      value = true;
    } else if (optional.has(name)) {
      value = eq >= 0 ? a.slice(eq + 1) : true;
    } else if (values.has(name)) {
      if (eq >= 0) value = a.slice(eq + 1);
      else if (i + 1 < argv.length) value = argv[++i];
      else throw new UsageError(`--${name} needs a value`);
    } else {
      throw new UsageError(`unknown option --${name}`);
    }
    if (repeated.has(name)) {
      const list = out.lists.get(name) ?? [];
      list.push(value as string);
      out.lists.set(name, list);
    } else {
      if (out.flags.has(name)) throw new UsageError(`--${name} given twice`);
      out.flags.set(name, value);
    }
  }
  return out;
}

/** Parses a non-negative integer flag value with optional K/M/G suffix (binary units). */
export function parseSize(text: string, what: string): number {
  const m = /^(\d+)([KMGT]i?B?)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`${what}: '${text}' is not a size (e.g. 4M, 1G, 65536)`);
  const mult: Record<string, number> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };
  const n = Number(m[1]) * (m[2] ? mult[m[2][0].toUpperCase()] : 1);
  if (!Number.isSafeInteger(n)) throw new UsageError(`${what}: '${text}' is too large`);
  return n;
}

export function parseInteger(text: string, what: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${what}: '${text}' is not a whole number`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`${what}: ${n} is out of range (${min}..${max})`);
  return n;
}

/**
 * An option's value checked against its bound in src/util/limits.ts (the same one the library
 * applies): a whole number, or with `size` a size with an optional K/M/G/T suffix.
 */
export function parseBounded(text: string, what: string, b: Bound, kind: 'integer' | 'size' = 'integer'): number {
  const n = kind === 'size' ? parseSize(text, what) : parseInteger(text, what, 0, Number.MAX_SAFE_INTEGER);
  if (!inBound(n, b)) throw new UsageError(b.powerOfTwo ? `${what}: ${n} is not a power of two in ${boundText(b)}` : `${what}: ${n} is out of range (${boundText(b)})`);
  return n;
}

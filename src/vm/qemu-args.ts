/**
 * Rewriting a user's QEMU command line: find the memory-backend-file objects, point them at
 * other files (restore) or at the image itself (clones), and add what a restore needs.
 */
export interface BackendArg {
  /** Index of the -object value in the argument list. */
  index: number;
  id: string;
  props: Map<string, string>;
  /** Written as JSON (`-object {"qom-type":…}`, as libvirt does) rather than key=value. */
  json: boolean;
}

/**
 * QEMU's key=value syntax (keyval/QemuOpts): parts separated by ',', where ',,' inside a value
 * is a literal comma; a first part without '=' is the implied key (`qom-type` for -object).
 * Returns undefined for the JSON form.
 */
export function parseKeyval(value: string, impliedKey: string): Map<string, string> {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    if (value[i] !== ',') cur += value[i];
    else if (value[i + 1] === ',') {
      cur += ',';
      i++;
    } else {
      parts.push(cur);
      cur = '';
    }
  }
  parts.push(cur);
  const props = new Map<string, string>();
  parts.forEach((part, i) => {
    const eq = part.indexOf('=');
    if (eq < 0 && i === 0) props.set(impliedKey, part);
    else if (eq < 0) props.set(part, 'on');
    else props.set(part.slice(0, eq), part.slice(eq + 1));
  });
  return props;
}

/** The inverse of parseKeyval: commas in values doubled. */
export function formatKeyval(props: Map<string, string>, impliedKey: string): string {
  const esc = (v: string) => v.replace(/,/g, ',,');
  const first = props.get(impliedKey);
  const rest = [...props].filter(([k]) => k !== impliedKey).map(([k, v]) => `${k}=${esc(v)}`);
  return [...(first !== undefined ? [esc(first)] : []), ...rest].join(',');
}

function parseObject(value: string): { props: Map<string, string>; json: boolean } {
  if (value.trimStart().startsWith('{')) {
    let obj: unknown;
    try {
      obj = JSON.parse(value);
    } catch (e) {
      throw new Error(`-object ${value}: not valid JSON (${(e as Error).message})`);
    }
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new Error(`-object ${value}: not a JSON object`);
    const text = (v: unknown) => (typeof v === 'boolean' ? (v ? 'on' : 'off') : typeof v === 'string' ? v : JSON.stringify(v));
    return { props: new Map(Object.entries(obj).map(([k, v]) => [k, text(v)])), json: true };
  }
  return { props: parseKeyval(value, 'qom-type'), json: false };
}

/** The `-object memory-backend-file,…` arguments, in QEMU's key=value (with ',,' escapes) or JSON form. */
export function fileBackends(args: string[]): BackendArg[] {
  const out: BackendArg[] = [];
  args.forEach((a, i) => {
    if (args[i - 1] !== '-object' && args[i - 1] !== '--object') return;
    const { props, json } = parseObject(a);
    if (props.get('qom-type') !== 'memory-backend-file') return;
    const id = props.get('id');
    if (!id) throw new Error(`-object ${a}: no id=`);
    out.push({ index: i, id, props, json });
  });
  return out;
}

const JSON_NUMBERS = new Set(['size', 'offset', 'align', 'host-nodes']);
const JSON_BOOLEANS = new Set(['share', 'readonly', 'rom', 'prealloc', 'discard-data', 'pmem', 'dump', 'merge', 'reserve', 'x-use-canonical-path-for-ramblock-id']);

/** The JSON form wants QEMU's types back: integers and booleans, not their key=value text. */
function formatJson(props: Map<string, string>): string {
  const out: Record<string, unknown> = {};
  for (const [k, v] of props) {
    if (JSON_NUMBERS.has(k) && /^\d+$/.test(v)) out[k] = Number(v);
    else if (JSON_BOOLEANS.has(k) && (v === 'on' || v === 'off')) out[k] = v === 'on';
    else out[k] = v;
  }
  return JSON.stringify(out);
}

/** A copy of `args` with each file backend's properties changed by `edit`. */
export function rewriteBackends(args: string[], edit: (b: BackendArg) => Map<string, string>): string[] {
  const out = [...args];
  for (const b of fileBackends(args)) {
    const props = edit(b);
    out[b.index] = b.json ? formatJson(props) : formatKeyval(props, 'qom-type');
  }
  return out;
}

/** Adds -incoming defer unless present; refuses an -incoming that is not "defer". */
export function withIncomingDefer(args: string[]): string[] {
  const i = args.findIndex((a) => a === '-incoming' || a === '--incoming');
  if (i < 0) return [...args, '-incoming', 'defer'];
  if (args[i + 1] !== 'defer') throw new Error(`the QEMU arguments already say -incoming ${args[i + 1]}; leave it out (or use defer)`);
  return args;
}

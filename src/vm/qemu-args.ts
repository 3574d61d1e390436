/**
 * Rewriting a user's QEMU command line: find the memory-backend-file objects, point them at
 * other files (restore) or at the image itself (clones), and add what a restore needs.
 */
export interface BackendArg {
  /** Index of the -object value in the argument list. */
  index: number;
  id: string;
  props: Map<string, string>;
}

function parseProps(value: string): Map<string, string> {
  const props = new Map<string, string>();
  for (const part of value.split(',').slice(1)) {
    const eq = part.indexOf('=');
    props.set(eq < 0 ? part : part.slice(0, eq), eq < 0 ? 'on' : part.slice(eq + 1));
  }
  return props;
}

/** The `-object memory-backend-file,…` arguments (QEMU's comma syntax; ',,' escapes are not supported). */
export function fileBackends(args: string[]): BackendArg[] {
  const out: BackendArg[] = [];
  args.forEach((a, i) => {
    if ((args[i - 1] === '-object' || args[i - 1] === '--object') && a.startsWith('memory-backend-file,')) {
      const props = parseProps(a);
      const id = props.get('id');
      if (!id) throw new Error(`-object ${a}: no id=`);
      out.push({ index: i, id, props });
    }
  });
  return out;
}

function formatBackend(props: Map<string, string>): string {
  return ['memory-backend-file', ...[...props].map(([k, v]) => `${k}=${v}`)].join(',');
}

/** A copy of `args` with each file backend's properties changed by `edit`. */
export function rewriteBackends(args: string[], edit: (b: BackendArg) => Map<string, string>): string[] {
  const out = [...args];
  for (const b of fileBackends(args)) out[b.index] = formatBackend(edit(b));
  return out;
}

/** Adds -incoming defer unless present; refuses an -incoming that is not "defer". */
export function withIncomingDefer(args: string[]): string[] {
  const i = args.indexOf('-incoming');
  if (i < 0) return [...args, '-incoming', 'defer'];
  if (args[i + 1] !== 'defer') throw new Error(`the QEMU arguments already say -incoming ${args[i + 1]}; leave it out (or use defer)`);
  return args;
}

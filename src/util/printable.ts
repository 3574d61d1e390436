/** Bytes from outside (file names, arguments) shown in a message without sending anything raw to a terminal. */

/** UTF-8 text as it is, with control characters as \xNN; bytes that are not UTF-8 each as \xNN (printable ASCII kept). */
export function printableBytes(bytes: Buffer): string {
  const text = bytes.toString('utf8');
  if (Buffer.from(text).equals(bytes)) return text.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return [...bytes].map((b) => (b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
}

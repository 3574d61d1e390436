/** A guest's serial port as a QEMU socket chardev (server=on,wait=off): what it printed since we connected, and lines to send. */
import * as net from 'net';

export class Serial {
  private text = '';
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => (this.text += d.toString('latin1')));
    sock.on('error', () => undefined);
  }
  static async connect(file: string, timeoutMs = 30000): Promise<Serial> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(file, () => resolve(s));
          s.once('error', reject);
        });
        return new Serial(sock);
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
  /** How much the guest has printed so far: a `from` for waitFor that skips earlier markers. */
  get length(): number {
    return this.text.length;
  }
  /** The last characters the guest printed (for error messages). */
  tail(chars = 400): string {
    return this.text.slice(-chars);
  }
  send(line: string): void {
    this.sock.write(`${line}\n`);
  }
  /** Waits until `marker` appears at or after `from`; resolves with the rest of its line. */
  async waitFor(marker: string, timeoutMs: number, from = 0): Promise<string> {
    return (await this.waitForAny([marker], timeoutMs, from)).rest;
  }
  /** Waits until one of `markers` appears (a whole line) at or after `from`: the first one printed, and the rest of its line. */
  async waitForAny(markers: string[], timeoutMs: number, from = 0): Promise<{ marker: string; rest: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = markers
        .map((marker) => ({ marker, at: this.text.indexOf(marker, from) }))
        .filter((x) => x.at >= 0 && this.text.indexOf('\n', x.at) >= 0)
        .sort((a, b) => a.at - b.at)[0];
      if (found) return { marker: found.marker, rest: this.text.slice(found.at + found.marker.length, this.text.indexOf('\n', found.at)).trim() };
      if (Date.now() > deadline) throw new Error(`the guest did not print ${markers.join(' or ')} within ${timeoutMs / 1000} s; it printed: ${this.text.slice(-300)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  close(): void {
    this.sock.destroy();
  }
}

/** How the CLI talks: messages on stderr written synchronously, never through process.stdout (fd 1 may be the data). */
import * as fs from 'fs';

export function stderrLine(text: string): void {
  try {
    fs.writeSync(2, text.endsWith('\n') ? text : text + '\n');
  } catch {
    // stderr closed: nothing left to tell.
  }
}

/** Whether finalLine ends with a newline: see there. */
let finalNewline = false;

/** The image commands (save, restore, inspect, convert, vm, libvirt-install) end their last line like any other line. */
export function endFinalLineWithNewline(): void {
  finalNewline = true;
}

/**
 * The last line before exit 1. In the stream forms, like libvirt_iohelper, it has no trailing
 * newline: libvirt captures stderr and shows it to the user as the error text. The image
 * commands are ours, run from shells and scripts: their last line ends like every other.
 */
export function finalLine(text: string): void {
  try {
    fs.writeSync(2, finalNewline && !text.endsWith('\n') ? `${text}\n` : text);
  } catch {
    // stderr closed.
  }
}

export function stdoutText(text: string): void {
  fs.writeSync(1, text);
}

/** The name failure lines start with: libvirt's helper path when run by the libvirt-install wrapper. */
export function commandName(argv: string[] = process.argv): string {
  return process.env.IOHELPER_ARGV0 || argv[1] || 'iohelper';
}

/** How the CLI talks: messages on stderr written synchronously, never through process.stdout (fd 1 may be the data). */
import * as fs from 'fs';

export function stderrLine(text: string): void {
  try {
    fs.writeSync(2, text.endsWith('\n') ? text : text + '\n');
  } catch {
    // stderr closed: nothing left to tell.
  }
}

export function stdoutText(text: string): void {
  fs.writeSync(1, text);
}

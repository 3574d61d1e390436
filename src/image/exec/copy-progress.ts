/**
 * Progress and cancellation of one save or restore: RAM bytes done (counted as jobs finish)
 * plus device-state bytes (counted by the native copy in `counters[0]`); `counters[1]` set
 * cancels the native copy, as an abort of `signal` does.
 */
import { ProgressListener, ProgressSampler } from '../../progress';

export class CopyProgress {
  readonly counters = new BigUint64Array(2);
  ramDone = 0;
  /** save: how the jobs read guest RAM (each RAM file's filesystem may choose differently). */
  readonly ramRead = new Set<string>();
  private readonly sampler?: ProgressSampler;
  private readonly onAbort = () => this.cancel();

  constructor(
    total: number,
    onProgress?: ProgressListener,
    private readonly signal?: AbortSignal,
  ) {
    if (onProgress) {
      const report: ProgressListener = (p) => onProgress(this.ramRead.size ? { ...p, ramRead: this.ramReadText() } : p);
      this.sampler = new ProgressSampler(() => this.ramDone + Number(this.counters[0]), report, total);
    }
    // An abort that came first (while a save waited for its manager) cancels before any copy starts.
    if (signal?.aborted) this.cancel();
    signal?.addEventListener('abort', this.onAbort);
  }

  /** The read paths that ran, sorted ("mmap+pread" when RAM files differed); undefined before any job said. */
  ramReadText(): string | undefined {
    return this.ramRead.size ? [...this.ramRead].sort().join('+') : undefined;
  }

  cancel(): void {
    this.counters[1] = 1n;
  }

  /** Reports the last figures and stops listening. */
  finish(): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.sampler?.stop();
  }
}

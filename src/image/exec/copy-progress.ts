/**
 * Progress and cancellation of one save or restore: RAM bytes done (counted as jobs finish)
 * plus device-state bytes (counted by the native copy in `counters[0]`); `counters[1]` set
 * cancels the native copy, as an abort of `signal` does.
 */
import { ProgressListener, ProgressSampler } from '../../progress';

export class CopyProgress {
  readonly counters = new BigUint64Array(2);
  ramDone = 0;
  private readonly sampler?: ProgressSampler;
  private readonly onAbort = () => this.cancel();

  constructor(
    total: number,
    onProgress?: ProgressListener,
    private readonly signal?: AbortSignal,
  ) {
    if (onProgress) this.sampler = new ProgressSampler(() => this.ramDone + Number(this.counters[0]), onProgress, total);
    // An abort that came first (while a save waited for its manager) cancels before any copy starts.
    if (signal?.aborted) this.cancel();
    signal?.addEventListener('abort', this.onAbort);
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

/**
 * One pass of the event loop's poll phase, where Node runs the handlers of signals that arrived
 * while this thread was busy or blocked (a long fdatasync, a full pipe). An abort check right
 * after it, with nothing that yields between it and the commit, honours every SIGINT/SIGTERM
 * delivered before the check. One setImmediate is not enough: queued from a poll-phase
 * callback it runs in the same iteration, before the next poll; one queued from inside an
 * immediate runs only in the next iteration, after its poll.
 */
export function afterPendingSignals(): Promise<void> {
  return new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
}

/**
 * A minimal QMP (QEMU Machine Protocol) client over a unix socket: newline-delimited JSON,
 * commands matched to replies by `id` (events may interleave), events re-emitted as 'event'.
 */
import { native } from '../native';
import { EventEmitter } from 'node:events';
import * as net from 'node:net';

/** An asynchronous QMP event such as STOP, RESUME or MIGRATION. */
export interface QmpEvent {
  event: string;
  data: any;
  timestamp: any;
}

/** A command QEMU answered with `{"error": {"class", "desc"}}`. */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly qmpClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command}: ${qmpClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

export interface QmpConnectOptions {
  /** Timeout for the handshake and the default for each command (ms, default 30 s). */
  timeoutMs?: number;
  /** How long to keep retrying while the socket is missing or refuses connections (ms, default 10 s). */
  retryUntilMs?: number;
  /** Stops the retrying early, e.g. when the QEMU process has exited. */
  signal?: AbortSignal;
}

interface Pending {
  command: string;
  resolve(value: any): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

const DEFAULT_TIMEOUT_MS = 30_000;
/**
 * The longest a command with fds may wait for room in the socket: sendmsg runs on the JS thread
 * (Node's socket cannot attach fds), so a peer that stops reading would stall every timer and
 * signal handler of the process for as long as this.
 */
const SEND_TIMEOUT_MS = 5_000;
/**
 * The longest QMP line we hold while waiting for its newline. QEMU's largest replies
 * (query-qmp-schema) are a few hundred KiB; a peer that never sends a newline must not grow
 * our memory without bound.
 */
export const MAX_LINE_BYTES = 16 * 1024 * 1024;
const DEFAULT_RETRY_MS = 10_000;
const RETRY_INTERVAL_MS = 50;
/** Pending key for the greeting QEMU sends unprompted on connect. */
const GREETING = '';

/** Emits 'event' (QmpEvent) for each QMP event and 'close' when the connection has ended. */
export interface QmpClient {
  on(event: 'event', listener: (ev: QmpEvent) => void): this;
  on(event: 'close', listener: () => void): this;
  off(event: 'event', listener: (ev: QmpEvent) => void): this;
  off(event: 'close', listener: () => void): this;
}

export class QmpClient extends EventEmitter {
  /** Resolves once the connection has ended (QEMU exited, or close() was called). */
  readonly closed: Promise<void>;
  private readonly pending = new Map<string, Pending>();
  private nextId = 1;
  private partial: string[] = [];
  private partialLength = 0;
  private closeReason: string | undefined;

  private constructor(
    private readonly socket: net.Socket,
    private readonly defaultTimeoutMs: number,
  ) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => {
      this.closeReason ??= `the QEMU monitor closed the connection (${err.message})`;
    });
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        this.closeReason ??= 'the QEMU monitor closed the connection';
        this.rejectAll();
        this.emit('close');
        resolve();
      });
    });
  }

  /** Connects (retrying while QEMU is still starting), reads the greeting and enables command mode. */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const socket = await connectWithRetry(socketPath, Date.now() + (opts.retryUntilMs ?? DEFAULT_RETRY_MS), opts.signal);
    const client = new QmpClient(socket, timeoutMs);
    try {
      await client.expectReply(GREETING, 'greeting', timeoutMs);
      await client.execute('qmp_capabilities');
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  /** Runs a command and resolves with its `return` value; rejects with QmpError on an error reply. */
  execute<T = any>(command: string, args?: object, opts: { timeoutMs?: number } = {}): Promise<T> {
    const id = `iohelper-${this.nextId++}`;
    const reply = this.expectReply(id, command, opts.timeoutMs ?? this.defaultTimeoutMs);
    if (this.closeReason === undefined) {
      const message = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.socket.write(JSON.stringify(message) + '\n');
    }
    return reply;
  }

  /**
   * Runs a command with file descriptors attached (SCM_RIGHTS), e.g. `getfd` or `add-fd`.
   * QEMU keeps its own copies; the caller may close its fds once this resolves.
   */
  async executeWithFds<T = any>(command: string, args: object, fds: number[], opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closeReason !== undefined) throw new Error(`QMP ${command}: ${this.closeReason}`);
    while (this.socket.writableLength > 0) await new Promise((resolve) => this.socket.once('drain', resolve));
    const id = `iohelper-${this.nextId++}`;
    const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
    const reply = this.expectReply(id, command, timeoutMs);
    const socketFd = (this.socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (typeof socketFd !== 'number' || socketFd < 0) throw new Error(`QMP ${command}: cannot pass fds: no socket fd`);
    try {
      native.sendWithFds(socketFd, Buffer.from(JSON.stringify({ execute: command, arguments: args, id }) + '\n'), fds, Math.min(timeoutMs, SEND_TIMEOUT_MS));
    } catch (e) {
      clearTimeout(this.pending.get(id)?.timer);
      this.pending.delete(id);
      throw e;
    }
    return reply;
  }

  /** Resolves with the data of the next event called `name` (only events arriving after this call). */
  waitEvent(name: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<any> {
    if (this.closeReason !== undefined) {
      return Promise.reject(new Error(`QMP event ${name}: ${this.closeReason}`));
    }
    return new Promise((resolve, reject) => {
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
        settle();
      };
      const onEvent = (ev: QmpEvent) => {
        if (ev.event === name) finish(() => resolve(ev.data));
      };
      const onClose = () => finish(() => reject(new Error(`QMP event ${name}: ${this.closeReason}`)));
      const timer = setTimeout(
        () => finish(() => reject(new Error(`QMP event ${name}: timed out after ${timeoutMs} ms`))),
        timeoutMs,
      );
      this.on('event', onEvent);
      this.once('close', onClose);
    });
  }

  /** Closes the connection; pending commands are rejected. */
  close(): void {
    this.closeReason ??= 'the QMP client was closed';
    this.socket.destroy();
  }

  /** Registers a waiter for the reply keyed `key`; rejects at once if the connection is gone. */
  private expectReply(key: string, command: string, timeoutMs: number): Promise<any> {
    return new Promise((resolve, reject) => {
      if (this.closeReason !== undefined) {
        reject(new Error(`QMP ${command}: ${this.closeReason}`));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(key);
        reject(new Error(`QMP ${command}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(key, { command, resolve, reject, timer });
    });
  }

  private onData(chunk: string): void {
    // The partial line is kept as pieces, joined only once its newline arrives: no rescanning
    // or re-copying of a long line on every chunk.
    let start = 0;
    let newline: number;
    while ((newline = chunk.indexOf('\n', start)) >= 0) {
      const line = (this.partial.join('') + chunk.slice(start, newline)).trim();
      this.partial = [];
      this.partialLength = 0;
      start = newline + 1;
      if (line) this.onMessage(line);
      if (this.socket.destroyed) return;
    }
    if (start < chunk.length) {
      this.partial.push(chunk.slice(start));
      this.partialLength += chunk.length - start;
    }
    if (this.partialLength > MAX_LINE_BYTES) this.protocolError(`a line longer than ${MAX_LINE_BYTES} bytes without a newline`);
  }

  /** A peer that does not speak QMP: the connection is closed and every waiter told why. */
  private protocolError(what: string): void {
    this.closeReason ??= `the QEMU monitor broke the QMP protocol: ${what}`;
    this.partial = [];
    this.partialLength = 0;
    this.socket.destroy();
  }

  private onMessage(line: string): void {
    let msg: any;
    try {
      msg = JSON.parse(line);
    } catch {
      this.protocolError(`invalid JSON: ${JSON.stringify(line.slice(0, 200))}`);
      return;
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
      this.protocolError(`a message that is not a JSON object: ${JSON.stringify(line.slice(0, 200))}`);
      return;
    }
    if ('error' in msg && (msg.error === null || typeof msg.error !== 'object' || typeof msg.error.class !== 'string' || typeof msg.error.desc !== 'string')) {
      this.protocolError(`an error reply without class and desc: ${JSON.stringify(line.slice(0, 200))}`);
      return;
    }
    if (typeof msg.event === 'string') {
      this.emit('event', { event: msg.event, data: msg.data, timestamp: msg.timestamp } satisfies QmpEvent);
    } else if (msg.QMP !== undefined) {
      this.settle(GREETING, (p) => p.resolve(msg.QMP));
    } else if ('return' in msg || 'error' in msg) {
      // Replies to commands sent without an id, or that already timed out, are dropped.
      if (typeof msg.id !== 'string') return;
      this.settle(msg.id, (p) =>
        msg.error ? p.reject(new QmpError(p.command, msg.error.class, msg.error.desc)) : p.resolve(msg.return),
      );
    }
  }

  private settle(key: string, fn: (p: Pending) => void): void {
    const p = this.pending.get(key);
    if (!p) return;
    this.pending.delete(key);
    clearTimeout(p.timer);
    fn(p);
  }

  private rejectAll(): void {
    for (const [key, p] of this.pending) {
      this.settle(key, () => p.reject(new Error(`QMP ${p.command}: ${this.closeReason}`)));
    }
  }
}

/** Connects to a unix socket, retrying while it does not exist yet or refuses connections. */
async function connectWithRetry(socketPath: string, deadline: number, signal?: AbortSignal): Promise<net.Socket> {
  for (;;) {
    signal?.throwIfAborted();
    try {
      return await connectOnce(socketPath);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const retryable = code === 'ENOENT' || code === 'ECONNREFUSED';
      if (!retryable || Date.now() >= deadline) {
        throw new Error(`QMP connect ${socketPath}: ${(e as Error).message}`);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_INTERVAL_MS));
  }
}

function connectOnce(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/**
 * Polls `query-migrate` until the migration completes (resolves with the final result) or
 * fails or is cancelled (rejects with QEMU's error-desc), or the timeout passes.
 */
export async function waitForMigration(
  qmp: QmpClient,
  opts: { timeoutMs?: number; pollMs?: number } = {},
): Promise<any> {
  const timeoutMs = opts.timeoutMs ?? 5 * 60_000;
  const pollMs = opts.pollMs ?? 100;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await qmp.execute('query-migrate');
    if (!info || typeof info !== 'object' || Array.isArray(info)) throw new Error(`QMP query-migrate: unexpected reply ${JSON.stringify(info)?.slice(0, 200)}`);
    if (info.status === 'completed') return info;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new Error(`migration ${info.status}: ${info['error-desc'] ?? 'no error description from QEMU'}`);
    }
    if (Date.now() >= deadline) {
      throw new Error(`migration still '${info.status ?? 'not started'}' after ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

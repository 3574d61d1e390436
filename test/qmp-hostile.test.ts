/**
 * A hostile or broken QMP peer (a fake monitor on a unix socket) gets a clear error, never a
 * TypeError, and cannot make the client buffer without bound.
 */
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { MAX_LINE_BYTES, QmpClient } from '../src/qmp/client';
import { listMemoryBackends } from '../src/vm/qemu-ram';

const GREETING = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 10}}, "capabilities": []}}\n';
let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-qmp-hostile-'))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A fake monitor: `onLine` answers each command line the client sends. */
async function fakeMonitor(first: string | Buffer, onLine: (cmd: { execute: string; id: string; arguments?: any }, sock: net.Socket) => void): Promise<{ path: string; close(): void }> {
  const p = path.join(dir, `m${Math.random().toString(36).slice(2)}`);
  const sockets: net.Socket[] = [];
  const server = net.createServer((sock) => {
    sockets.push(sock);
    sock.on('error', () => undefined);
    sock.write(first);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        onLine(JSON.parse(line), sock);
      }
    });
  });
  await new Promise<void>((r) => server.listen(p, r));
  return { path: p, close: () => (sockets.forEach((s) => s.destroy()), server.close()) };
}

const answer = (sock: net.Socket, id: string, ret: unknown) => sock.write(JSON.stringify({ return: ret, id }) + '\n');

test.each([
  ['null', 'null\n'],
  ['a bare number', '5\n'],
  ['an array', '[1,2]\n'],
  ['invalid JSON', '{"QMP": \n'],
])('a greeting that is %s is a protocol error', async (_what, greeting) => {
  const m = await fakeMonitor(greeting, () => undefined);
  try {
    await expect(QmpClient.connect(m.path, { timeoutMs: 3000 })).rejects.toThrow(/broke the QMP protocol/);
  } finally {
    m.close();
  }
});

test('an error reply without class/desc is a protocol error, not a TypeError', async () => {
  const m = await fakeMonitor(GREETING, (cmd, sock) => sock.write(JSON.stringify({ error: null, id: cmd.id }) + '\n'));
  try {
    await expect(QmpClient.connect(m.path, { timeoutMs: 3000 })).rejects.toThrow(/broke the QMP protocol: an error reply without class and desc/);
  } finally {
    m.close();
  }
});

test.each([
  ['5', 5],
  ['[null]', [null]],
  ['[{"name": 1}]', [{ name: 1, type: 'child<memory-backend-file>' }]],
])('qom-list answering %s: EQMP_PROTOCOL, not a TypeError', async (_t, reply) => {
  const m = await fakeMonitor(GREETING, (cmd, sock) => answer(sock, cmd.id, cmd.execute === 'qom-list' ? reply : {}));
  const qmp = await QmpClient.connect(m.path, { timeoutMs: 3000 });
  try {
    const err = await listMemoryBackends(qmp).then(() => undefined, (e) => e);
    expect(err).toMatchObject({ code: 'EQMP_PROTOCOL' });
    expect(err).not.toBeInstanceOf(TypeError);
  } finally {
    qmp.close();
    m.close();
  }
});

test('qom-get answering the wrong type (size "big") is refused', async () => {
  const m = await fakeMonitor(GREETING, (cmd, sock) => {
    if (cmd.execute === 'qom-list') answer(sock, cmd.id, [{ name: 'ram0', type: 'child<memory-backend-file>' }]);
    else if (cmd.execute === 'qom-get') answer(sock, cmd.id, 'big');
    else answer(sock, cmd.id, {});
  });
  const qmp = await QmpClient.connect(m.path, { timeoutMs: 3000 });
  try {
    await expect(listMemoryBackends(qmp)).rejects.toMatchObject({ code: 'EQMP_PROTOCOL' });
  } finally {
    qmp.close();
    m.close();
  }
});

test('a peer that never sends a newline is cut off at the line limit, memory bounded', async () => {
  const chunk = Buffer.alloc(1024 * 1024, 'x');
  const m = await fakeMonitor(GREETING, (cmd, sock) => {
    if (cmd.execute !== 'query-status') answer(sock, cmd.id, {});
    // With backpressure: the fake peer itself must not buffer (it shares this process).
    const flood = () => {
      while (!sock.destroyed && sock.write(chunk));
      if (!sock.destroyed) sock.once('drain', flood);
    };
    if (cmd.execute === 'query-status') flood();
  });
  const qmp = await QmpClient.connect(m.path, { timeoutMs: 20000 });
  const before = process.memoryUsage().rss;
  try {
    await expect(qmp.execute('query-status')).rejects.toThrow(new RegExp(`longer than ${MAX_LINE_BYTES} bytes without a newline`));
    expect(process.memoryUsage().rss - before).toBeLessThan(256 * 1024 * 1024);
  } finally {
    qmp.close();
    m.close();
  }
});

test('a monitor that stops reading cannot hang the JS thread while fds are sent (ETIMEDOUT, bounded)', async () => {
  // The peer answers the handshake, then never reads again: the socket fills, and sendmsg of
  // a command with fds must give up instead of blocking in poll() for ever.
  const m = await fakeMonitor(GREETING, (cmd, sock) => {
    if (cmd.execute === 'qmp_capabilities') {
      answer(sock, cmd.id, {});
      sock.pause();
    }
  });
  const qmp = await QmpClient.connect(m.path, { timeoutMs: 3000 });
  const fd = fs.openSync(path.join(dir, 'passed'), 'w');
  try {
    const pad = 'x'.repeat(1 << 20); // more than the socket's buffers hold
    let error: NodeJS.ErrnoException | null = null;
    for (let i = 0; i < 16 && !error; i++) {
      const reply = qmp.executeWithFds('getfd', { fdname: `f${i}`, pad }, [fd], { timeoutMs: 1000 });
      reply.catch(() => undefined);
      // A send that failed has rejected before the next turn of the event loop; one that went
      // out waits for a reply that never comes.
      error = await Promise.race([reply.then(() => null, (e) => e as NodeJS.ErrnoException), new Promise<null>((r) => setImmediate(() => r(null)))]);
    }
    expect(error?.code).toBe('ETIMEDOUT');
    expect(error?.syscall).toBe('sendmsg');
  } finally {
    fs.closeSync(fd);
    qmp.close();
    m.close();
  }
});

/**
 * QEMU's option syntax as the VM manager reads and rewrites it: ',,' is a literal comma in a
 * value, the first bare part is the object type, and the JSON form (libvirt's) round-trips
 * with QEMU's types. Before, `mem-path=/dev/shm/c,,d` was read as mem-path=/dev/shm/c.
 */
import { fileBackends, formatKeyval, parseKeyval, rewriteBackends, withIncomingDefer } from '../src/vm/qemu-args';

test("',,' in a value is a comma: mem-path=/dev/shm/c,,d is /dev/shm/c,d", () => {
  const [b] = fileBackends(['-object', 'memory-backend-file,id=ram0,size=256M,mem-path=/dev/shm/c,,d,share=on']);
  expect(b.id).toBe('ram0');
  expect(b.props.get('mem-path')).toBe('/dev/shm/c,d');
  expect(b.props.get('share')).toBe('on');
  expect(b.json).toBe(false);
});

test.each([
  'memory-backend-file,id=r,mem-path=/a,,b,,,,c,share=on',
  'memory-backend-file,id=r,,x,mem-path=/plain',
  'memory-backend-file,id=r,mem-path=/ends-with-comma,,',
])('parse and format round-trip: %s', (text) => {
  const props = parseKeyval(text, 'qom-type');
  expect(formatKeyval(props, 'qom-type')).toBe(text);
  expect(parseKeyval(formatKeyval(props, 'qom-type'), 'qom-type')).toEqual(props);
});

test('rewriting escapes commas in new values', () => {
  const out = rewriteBackends(['-object', 'memory-backend-file,id=ram0,mem-path=/x,share=on'], (b) => new Map(b.props).set('mem-path', '/new,path'));
  expect(out[1]).toBe('memory-backend-file,id=ram0,mem-path=/new,,path,share=on');
  expect(fileBackends(out)[0].props.get('mem-path')).toBe('/new,path');
});

test("other -object types are not memory backends, even with 'memory-backend-file' in a value", () => {
  expect(fileBackends(['-object', 'secret,id=s,data=memory-backend-file,,x'])).toEqual([]);
});

test('the JSON form (libvirt) is read, and rewritten with integers and booleans', () => {
  const json = '{"qom-type":"memory-backend-file","id":"pc.ram","mem-path":"/var/lib/libvirt/qemu/ram/1-vm/pc.ram","share":true,"size":268435456}';
  const [b] = fileBackends(['-object', json]);
  expect(b).toMatchObject({ id: 'pc.ram', json: true });
  expect(b.props.get('share')).toBe('on');
  expect(b.props.get('size')).toBe('268435456');
  const out = rewriteBackends(['-object', json], (x) => new Map(x.props).set('offset', '1048576').set('readonly', 'on').set('share', 'off'));
  expect(JSON.parse(out[1])).toEqual({ 'qom-type': 'memory-backend-file', id: 'pc.ram', 'mem-path': '/var/lib/libvirt/qemu/ram/1-vm/pc.ram', share: false, size: 268435456, offset: 1048576, readonly: true });
});

test('-incoming defer is added once: kept when the arguments have it, another -incoming is refused', () => {
  expect(withIncomingDefer(['-m', '256M'])).toEqual(['-m', '256M', '-incoming', 'defer']);
  expect(withIncomingDefer(['-incoming', 'defer', '-m', '256M'])).toEqual(['-incoming', 'defer', '-m', '256M']);
  expect(withIncomingDefer(['--incoming', 'defer'])).toEqual(['--incoming', 'defer']);
  expect(() => withIncomingDefer(['-m', '256M', '-incoming', 'tcp:0:4444'])).toThrow('the QEMU arguments already say -incoming tcp:0:4444; leave it out (or use defer)');
});

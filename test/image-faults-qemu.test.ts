/**
 * A device-state stream that QEMU cut short (it died mid-migration): a save of it fails saying
 * so; by path no image appears, into an fd the image is incomplete and refused. The stream is
 * a real QEMU 10's (x-ignore-shared). The save faults without QEMU: image-faults.test.ts.
 */
import * as fs from 'fs';
import * as path from 'path';
import { waitForMigration } from '../src/qmp/client';
import { lastLine, runHelper } from './support/cli';
import { expectRefused, faultScratch, temporaries } from './support/image-faults';
import { describeQemu, startQemu } from './support/qemu';

const M = 1024 * 1024;
const scratch = faultScratch('faults-qemu');
const ram = scratch.ram;

describeQemu('a device-state stream cut short (QEMU died mid-migration)', () => {
  let stream: Buffer;
  beforeAll(async () => {
    const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: 256 * M }] });
    const file = path.join(scratch.dir, 'devstate.bin');
    try {
      await vm.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
      await vm.qmp.execute('migrate', { uri: `exec:cat > '${file}'` });
      await waitForMigration(vm.qmp);
    } finally {
      await vm.stop();
    }
    stream = fs.readFileSync(file);
  });

  const save = (image: string, input: Buffer, opts: { fd?: boolean } = {}) => {
    if (!opts.fd) return runHelper(['save', '--image', image, '--ram', `ram0=${ram}`], [input, 'ignore']);
    const fd = fs.openSync(image, fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o600);
    return runHelper(['save', '--fd', '3', '--name', image, '--ram', `ram0=${ram}`], [input, 'ignore', 'pipe', fd]).finally(() => fs.closeSync(fd));
  };

  test('the whole stream commits', async () => {
    const r = await save(path.join(scratch.dir, 'whole.img'), stream);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  });

  test.each([0.1, 0.6, 0.999])('a stream cut at %p of its length: exit 1; by path no image appears, into an fd it is incomplete and refused', async (frac) => {
    const cut = stream.subarray(0, Math.floor(stream.length * frac));
    const incomplete = /device-state stream from QEMU is incomplete .*did QEMU stop mid-migration\? .*\(EIMG_TRUNCATED\)$/;
    const byPath = path.join(scratch.dir, `cut-${frac}-path.img`);
    const p = await save(byPath, cut);
    expect(p.code).toBe(1);
    expect(lastLine(p.stderr)).toMatch(incomplete);
    expect(fs.existsSync(byPath)).toBe(false);
    expect(temporaries(byPath)).toEqual([]);
    const image = path.join(scratch.dir, `cut-${frac}.img`);
    const r = await save(image, cut, { fd: true });
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(incomplete);
    await expectRefused(image, ram);
  });
});

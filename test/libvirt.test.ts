/**
 * Under a real libvirtd: `virsh save --bypass-cache` and `virsh restore --bypass-cache` of a
 * small domain with file-backed, shared RAM go through iohelper installed in libvirt's place
 * (`iohelper libvirt-install`), in every save image format whose data passes through the helper;
 * guest RAM is hashed while paused before the save and after a paused restore. A save into a
 * full filesystem fails with our message, shown by virsh. Uninstall puts libvirt's helper back.
 *
 * TCG on purpose: under nested KVM here 2 bytes of the legacy BIOS area differ after any
 * restore (with libvirt's own helper too); under TCG the RAM is identical.
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { DEFAULT_LIBVIRT_HELPER } from '../src/install/libvirt-helper';
import { IOHELPER } from './support/cli';
import { waitForOutput } from './support/guest';
import { domainRamFile, ensureLibvirtd, Libvirtd, libvirtdUnavailable, memoryBackingOnTmpfs, virsh, virshResult } from './support/libvirtd';
import { mountFs, Mount } from './support/mounts';
import { requireOrSkip } from './support/require-or-skip';

const GUEST = path.join(__dirname, '..', '.cache', 'guest');
const NAME = `iohelper-test-${process.pid}`;
const sha = (f: string) => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');

/** libvirt's save image formats that pipe QEMU's stream (maybe through a compressor) through the helper. */
const FORMATS = ['raw', 'gzip', 'bzip2', 'xz', 'lzop', 'zstd'];

/** The domain, its serial port (the guest's ticks) written to the file `serial`. */
function domainXml(dir: string, serial: string): string {
  return `<domain type='qemu'>
  <name>${NAME}</name>
  <memory unit='MiB'>256</memory>
  <memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${dir}/vmlinuz</kernel><initrd>${dir}/initrd.gz</initrd><cmdline>console=ttyS0 panic=-1</cmdline></os>
  <devices><serial type='file'><source path='${serial}'/><target port='0'/></serial><video><model type='none'/></video><memballoon model='none'/></devices>
</domain>`;
}

const ramFile = () => domainRamFile(NAME);

const why = libvirtdUnavailable() ?? (fs.existsSync(path.join(GUEST, 'vmlinuz')) ? undefined : 'the test guest is missing (scripts/build-test-guest.sh)');
const maybe = requireOrSkip(why);

maybe('virsh save/restore --bypass-cache through iohelper under a real libvirtd', () => {
  let daemon: Libvirtd;
  let dir: string;
  let starts = 0;
  let stockHash: string;
  let unmountRam = () => undefined as void;

  beforeAll(async () => {
    daemon = await ensureLibvirtd();
    unmountRam = memoryBackingOnTmpfs();
    stockHash = sha(DEFAULT_LIBVIRT_HELPER);
    dir = fs.mkdtempSync('/var/lib/libvirt/images/iohelper-test-');
    fs.chmodSync(dir, 0o755);
    for (const f of ['vmlinuz', 'initrd.gz']) fs.copyFileSync(path.join(GUEST, f), path.join(dir, f));
    const r = spawnSync(process.execPath, [IOHELPER, 'libvirt-install'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`libvirt-install failed: ${r.stderr}`);
  }, 60000);

  afterAll(() => {
    virshResult('destroy', NAME);
    spawnSync(process.execPath, [IOHELPER, 'libvirt-install', '--uninstall'], { stdio: 'ignore' });
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    unmountRam();
    daemon?.stop();
  });

  afterEach(() => {
    virshResult('destroy', NAME);
  });

  /** Starts the domain, waits until the guest's kernel runs (its first line on the serial port), pauses it; returns its RAM hash. */
  async function startPaused(): Promise<string> {
    const xml = path.join(dir, `domain-${++starts}.xml`);
    const serial = path.join(dir, `serial-${starts}.txt`);
    fs.writeFileSync(xml, domainXml(dir, serial));
    virsh('create', xml);
    await waitForOutput(serial, /Linux version/);
    virsh('suspend', NAME);
    return sha(ramFile());
  }

  test.each(FORMATS)('%s format: RAM identical after save and restore', async (format) => {
    const before = await startPaused();
    const image = path.join(dir, `${format}.save`);
    const save = virshResult('save', NAME, image, '--bypass-cache', '--image-format', format);
    expect(save.stderr).toBe('');
    expect(save.status).toBe(0);
    expect(virshResult('domstate', NAME).status).not.toBe(0); // saved domains are gone
    const restore = virshResult('restore', image, '--bypass-cache', '--paused');
    expect(restore.stderr).toBe('');
    expect(restore.status).toBe(0);
    expect(sha(ramFile())).toBe(before);
    fs.rmSync(image);
  });

  test('a save into a full filesystem fails with our message; the domain keeps running', async () => {
    await startPaused();
    let m: Mount | undefined;
    try {
      m = mountFs('tmpfs', 'size=8m');
      const save = virshResult('save', NAME, path.join(m.dir, 'full.save'), '--bypass-cache');
      expect(save.status).not.toBe(0);
      // "(ENOSPC)" is ours: libvirt_iohelper's own line ends with the strerror text alone.
      expect(save.stderr).toMatch(/libvirt_iohelper: failure with .*full\.save: Unable to write .*full\.save: No space left on device \(ENOSPC\)/);
      expect(virsh('domstate', NAME).trim()).toBe('paused');
    } finally {
      m?.unmount();
    }
  });

  test('uninstall puts libvirt_iohelper back byte for byte', () => {
    const r = spawnSync(process.execPath, [IOHELPER, 'libvirt-install', '--uninstall'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(sha(DEFAULT_LIBVIRT_HELPER)).toBe(stockHash);
  });
});

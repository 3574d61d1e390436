/**
 * jest.config.js runs the unit project's files in parallel beside the serial lane (QEMU,
 * libvirtd, hugetlbfs, libvirt_iohelper): no unit file may use any of those, and every file
 * of the serial lane must use one of them (else it belongs with the unit files).
 */
import * as fs from 'fs';
import * as path from 'path';

const config = require('../jest.config.js');
const names = (project: string): string[] =>
  config.projects.find((p: { displayName: string }) => p.displayName === project).testMatch.map((m: string) => path.basename(m));
const text = (f: string) => fs.readFileSync(path.join(__dirname, f), 'utf8');

/** What makes a file machine-wide: QEMU or the guest, libvirtd, hugetlbfs, libvirt's helper path. */
const MACHINE_WIDE = [
  /\b(startQemu|describeQemu|describeGuest|ensureLibvirtd|virsh)\b/,
  /'hugetlbfs'|nr_hugepages/,
  /\/usr\/lib\/libvirt\b|'libvirt-install'/,
];

test('every test file is in exactly one project', () => {
  const all = fs.readdirSync(__dirname).filter((f) => f.endsWith('.test.ts')).sort();
  expect([...names('unit'), ...names('qemu'), ...names('bench')].sort()).toEqual(all);
});

test.each(['unit'])('no %s file starts QEMU, libvirtd or the guest, mounts hugetlbfs or runs libvirt_iohelper', (project) => {
  const offenders = names(project).filter((f) => f !== path.basename(__filename) && MACHINE_WIDE.some((re) => re.test(text(f))));
  expect(offenders).toEqual([]);
});

test.each(['qemu', 'bench'])('every %s file needs the serial lane', (project) => {
  const needless = names(project).filter((f) => !MACHINE_WIDE.some((re) => re.test(text(f))));
  expect(needless).toEqual([]);
});

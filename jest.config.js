/**
 * Three projects, run at the same time in two lanes by test/support/lanes-runner.js:
 *   unit   files that use nothing of the machine's but their own temporaries (small tmpfs or
 *          ramfs mounts, loop devices and /dev/shm files of their own included): in parallel,
 *          on maxWorkers - 1 workers;
 *   qemu   files that start QEMU, libvirtd or the test guest, mount hugetlbfs, set
 *          nr_hugepages, replace /usr/lib/libvirt/libvirt_iohelper or run it (it is replaced
 *          meanwhile): one file at a time, on a worker of their own;
 *   bench  the bench smoke test (`npm run bench -- --quick`): in the serial lane, after qemu.
 * test/lanes.test.ts checks that no unit file starts QEMU or touches those machine-wide things.
 * dist/ is built from the current sources once before the run (test/support/build.js).
 */
const fs = require('fs');
const os = require('os');
const path = require('path');

const QEMU = [
  'delta-vm',
  'file-modes',
  'hugetlbfs',
  'image-faults-qemu',
  'image-qemu',
  'leftovers',
  'libvirt',
  'libvirt-contract',
  'libvirt-install',
  'messages',
  'qmp',
  'restore-exec-flow',
  'running-guest',
  'stream-qemu',
  'vm-cli',
  'vm-manager',
  'vm-save-guest-state',
  'working-set',
];
const BENCH = ['bench-smoke'];

const file = (name) => `<rootDir>/test/${name}.test.ts`;
const UNIT = fs
  .readdirSync(path.join(__dirname, 'test'))
  .filter((f) => f.endsWith('.test.ts'))
  .map((f) => f.slice(0, -'.test.ts'.length))
  .filter((name) => !QEMU.includes(name) && !BENCH.includes(name));

const project = (displayName, names) => ({
  displayName,
  preset: 'ts-jest',
  testEnvironment: 'node',
  runner: '<rootDir>/test/support/lanes-runner.js',
  testMatch: names.map(file),
});

module.exports = {
  projects: [project('unit', UNIT), project('qemu', QEMU), project('bench', BENCH)],
  // The serial lane's worker and at least one for the unit lane.
  maxWorkers: Math.max(2, os.availableParallelism()),
  testTimeout: 120000,
  globalSetup: '<rootDir>/test/support/build.js',
  reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
};

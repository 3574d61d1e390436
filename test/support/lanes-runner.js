// The jest runner of every project in jest.config.js. Jest 29 runs the tests of different
// runners one runner after the other, and its maxWorkers is one number for the whole run, so
// a serial project cannot be had from the config alone. This runner takes all the tests and
// runs two lanes at the same time:
//   - the files of the projects in SERIAL_PROJECTS (QEMU, libvirtd, hugetlbfs, system files),
//     one file at a time on a worker process of their own, in that project order;
//   - the files of the other projects (unit tests) on the remaining maxWorkers - 1 workers
//     (at least one).
// When jest runs in band (-i, --runInBand, one test file), everything runs in band, one file
// after another, as before.
const TestRunner = require('jest-runner').default;

/** Projects (displayName) whose files must never run beside another of these files. */
const SERIAL_PROJECTS = ['qemu', 'bench'];

const projectOf = (test) => {
  const d = test.context.config.displayName;
  return typeof d === 'string' ? d : d?.name;
};

class LanesRunner {
  constructor(globalConfig, context) {
    this.supportsEventEmitters = true;
    this.isSerial = false;
    const unitWorkers = Math.max(1, globalConfig.maxWorkers - 1);
    this.unit = new TestRunner({ ...globalConfig, maxWorkers: unitWorkers }, context);
    this.serial = new TestRunner({ ...globalConfig, maxWorkers: 1 }, context);
  }

  on(event, listener) {
    const off = [this.unit.on(event, listener), this.serial.on(event, listener)];
    return () => off.forEach((f) => f());
  }

  async runTests(tests, watcher, options) {
    if (options.serial) return this.unit.runTests(tests, watcher, options);
    const serial = SERIAL_PROJECTS.flatMap((p) => tests.filter((t) => projectOf(t) === p));
    const unit = tests.filter((t) => !SERIAL_PROJECTS.includes(projectOf(t)));
    await Promise.all([
      unit.length > 0 && this.unit.runTests(unit, watcher, { serial: false }),
      serial.length > 0 && this.serial.runTests(serial, watcher, { serial: false }),
    ]);
  }
}

LanesRunner.SERIAL_PROJECTS = SERIAL_PROJECTS;
module.exports = LanesRunner;

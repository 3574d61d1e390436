/**
 * Tests run one file at a time: the integration tests start real QEMU guests on a 2-core box.
 * dist/ is built from the current sources once before the run (test/support/build.js).
 */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  testTimeout: 120000,
  maxWorkers: 1,
  globalSetup: '<rootDir>/test/support/build.js',
  reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
};

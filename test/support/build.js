// jest globalSetup: builds dist/ from the current sources (`npm run build:ts`, then
// `npm run build:bench` for the bench and the demo) once, before any test file runs. The tests
// run TypeScript through ts-jest, but bin/iohelper, the worker threads of src/image/pool.ts and
// the bench smoke test load the compiled files under dist/: without this, `npx jest FILE`
// would test whatever was built last. The builds are incremental (dist/.*.tsbuildinfo); when
// an output they would not rewrite is missing, they start over.
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const BUILDS = [
  { script: 'build:ts', info: 'dist/.build.tsbuildinfo', outputs: ['dist/src/cli/main.js', 'dist/src/image/range-worker.js'] },
  { script: 'build:bench', info: 'dist/.bench.tsbuildinfo', outputs: ['dist/bench/main.js', 'dist/demo/main.js'] },
];

module.exports = async function buildForTests(globalConfig) {
  const root = globalConfig.rootDir;
  const t0 = Date.now();
  for (const b of BUILDS) {
    if (b.outputs.some((f) => !fs.existsSync(path.join(root, f)))) fs.rmSync(path.join(root, b.info), { force: true });
    execFileSync('npm', ['run', '--silent', b.script], { cwd: root, stdio: 'inherit' });
  }
  console.log(`\nglobal setup: dist/ built from the current sources in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
};

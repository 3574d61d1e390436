/**
 * The one way a test file says it cannot run here: with REQUIRE_QEMU=1 (CI, `.ci/run`) a missing
 * part is a failing test, never a skip; otherwise the tests are skipped with a line saying why.
 */

/** Set REQUIRE_QEMU=1 (e.g. in CI) to make a missing part fail the tests instead of skipping them. */
const requireQemu = process.env.REQUIRE_QEMU === '1';

/**
 * A `describe` for tests that need something this machine may lack: `why` is undefined when it
 * is here (the plain describe), else the reason, which a failing test (REQUIRE_QEMU=1) or the
 * skip's warning quotes.
 */
export function requireOrSkip(why: string | undefined): (name: string, fn: () => void) => void {
  if (why === undefined) return describe;
  if (requireQemu) {
    return (name) =>
      describe(name, () => {
        test(`needs what is missing (REQUIRE_QEMU=1): ${why}`, () => {
          throw new Error(`REQUIRE_QEMU=1 but ${why}`);
        });
      });
  }
  return (name, fn) => {
    console.warn(`Skipping "${name}": ${why} (set REQUIRE_QEMU=1 to fail instead)`);
    describe.skip(name, fn);
  };
}

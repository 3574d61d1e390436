/**
 * The numbers docs/FORMAT.md states are the constants the code uses: a field's offset, a tag's
 * size, a bound. A change to one without the other fails here instead of leaving the spec wrong.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as F from '../src/image/format/common';
import { HASH_UNIT } from '../src/util/limits';

const spec = fs.readFileSync(path.join(__dirname, '..', 'docs', 'FORMAT.md'), 'utf8');
const log2 = (n: number) => Math.log2(n);

/** The offset in the first column of the spec's table row that names field `name` in backquotes. */
function offsetOf(name: string, after = 0): number {
  const row = spec
    .slice(after)
    .split('\n')
    .find((l) => new RegExp(`^\\| \\d+ \\|[^|]*\`${name}\``).test(l) || new RegExp(`^\\| \\d+ \\| [^|]*\\| [^|]*\\| \`${name}\``).test(l));
  if (!row) throw new Error(`FORMAT.md has no table row for \`${name}\``);
  return Number(/^\| (\d+) /.exec(row)![1]);
}

test.each([
  ['deviceStateCrc', F.DEVICE_STATE_CRC_AT],
  ['imageId', F.ID_AT],
  ['hashUnit', F.HASH_UNIT_AT],
  ['hashAlgorithm', F.HASH_ALGORITHM_AT],
  ['depth', F.DEPTH_AT],
  ['hashKey', F.KEY_AT],
])('header field %s is at offset %d', (name, at) => {
  expect(offsetOf(name)).toBe(at);
});

test.each([
  ['baseId', F.BASE_ID_AT],
  ['baseImageSize', F.BASE_SIZE_AT],
  ['baseHeaderCrc', F.BASE_CRC_AT],
  ['basePathLength', F.BASE_PATH_LENGTH_AT],
  ['basePath', F.BASE_PATH_AT],
])('version 3 base reference field %s is at offset %d', (name, at) => {
  expect(offsetOf(name, spec.indexOf('## Version 3'))).toBe(at);
});

test('sizes and bounds in the prose are the constants', () => {
  expect(spec).toContain(`tags of ${F.HASH_BYTES} bytes`);
  expect(spec).toContain(`(${F.HASH_BYTES} bytes a unit: ${(4 * 2 ** 30 / F.DEFAULT_HASH_UNIT) * F.HASH_BYTES / 2 ** 20} MiB for 4 GiB)`);
  expect(spec).toContain(`The unit** is ${F.DEFAULT_HASH_UNIT / 1024} KiB by default`);
  expect(spec).toContain(`image has at most 2^${log2(F.MAX_HASH_UNITS)} units`);
  expect(spec).toContain(`\`max(4096, pageSize)\` … 2^${log2(HASH_UNIT.max)}`);
  expect(spec).toContain(`A chain is at most ${F.MAX_DEPTH} deltas deep`);
  expect(spec).toContain(`\`basePathLength\`: 1 … ${F.MAX_BASE_PATH}`);
  expect(spec).toContain(`at most 2^${log2(F.MAX_INDEX_ENTRIES)} in all blocks together (${(F.MAX_INDEX_ENTRIES * F.INDEX_ENTRY) / 2 ** 20} MiB of index in memory)`);
});

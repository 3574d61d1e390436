/** The codec tests' check of a refused image: an ImageFormatError with this code, naming the field. */
import { ImageFormatError } from '../../src/image/format';

export function expectRefusal(fn: () => unknown, code: string, field: RegExp): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown).toBeInstanceOf(ImageFormatError);
  expect((thrown as ImageFormatError).code).toBe(code);
  expect((thrown as Error).message).toMatch(field);
}

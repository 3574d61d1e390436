/** The test guest (scripts/build-test-guest.sh) as the benchmarks boot it: TCG on both cores, RAM block `ram0` a shared file. */
import * as path from 'path';
import { packageRoot } from '../../src/package-root';

export const GUEST_DIR = () => path.join(packageRoot(), '.cache', 'guest');

/** QEMU arguments: `size` bytes of RAM at `ram` (share=on), the kernel command line's `append` (after the console), the serial port as `serial`. */
export function testGuestArgs(size: number, ram: string, append: string, serial: string[]): string[] {
  return [
    '-accel', 'tcg,thread=multi', '-smp', '2',
    '-nodefaults', '-display', 'none',
    '-machine', 'q35,memory-backend=ram0', '-m', `${size / 2 ** 20}M`,
    '-object', `memory-backend-file,id=ram0,size=${size},mem-path=${ram},share=on`,
    '-kernel', path.join(GUEST_DIR(), 'vmlinuz'), '-initrd', path.join(GUEST_DIR(), 'initrd.gz'),
    '-append', `console=ttyS0 quiet panic=-1 ${append}`,
    ...serial,
  ];
}

/** A serial port on a unix socket QEMU listens on (the bench connects when it wants). */
export const serialSocketArgs = (sock: string) => ['-chardev', `socket,id=ser0,path=${sock},server=on,wait=off`, '-serial', 'chardev:ser0'];

/** QEMU's own parallel save path, for comparison: mapped-ram + multifd + direct-io to a file. */
import { QmpClient, waitForMigration } from '../../src/qmp/client';

async function enableMappedRam(qmp: QmpClient, channels = 2, directIo = true): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'mapped-ram', state: true },
      { capability: 'multifd', state: true },
    ],
  });
  await qmp.execute('migrate-set-parameters', { 'multifd-channels': channels, 'direct-io': directIo, 'max-bandwidth': 2 ** 50 });
}

/** The guest must be stopped. */
export async function saveMappedRam(qmp: QmpClient, file: string, directIo = true, channels = 2): Promise<void> {
  await enableMappedRam(qmp, channels, directIo);
  await qmp.execute('migrate', { uri: `file:${file}` });
  await waitForMigration(qmp, { pollMs: 20 });
}

/** QEMU must have been started with -incoming defer. */
export async function restoreMappedRam(qmp: QmpClient, file: string, directIo = true, channels = 2): Promise<void> {
  await enableMappedRam(qmp, channels, directIo);
  await qmp.execute('migrate-incoming', { uri: `file:${file}` });
  await waitForMigration(qmp, { pollMs: 20 });
}

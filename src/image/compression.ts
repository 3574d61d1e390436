/** The zstd levels of compressed images (docs/FORMAT.md, version 2); the CLI's --compress is parsed in src/cli/image-args.ts. */

/** zstd levels every libzstd we build against (1.4+) accepts: -7 (fastest) .. 19 (smallest). 0 stores chunks raw. */
export const MIN_LEVEL = -7;
export const MAX_LEVEL = 19;

/**
 * The image format (docs/FORMAT.md), versions 1 (mappable), 2 (compressed) and 3 (delta):
 * constants and types (common.ts), the header (header.ts), the block table and the regions it
 * places (block-table.ts), the per-block tables (tables.ts), a writer's layout (layout.ts), and
 * what other files inspect recognises (sniff.ts).
 */
export * from './common';
export * from './header';
export * from './block-table';
export * from './tables';
export * from './layout';

/**
 * A catalog file or entry refused: the reason, from the one catalogue of
 * reasons (protocol/reasons.ts), for scripts, and what exactly is wrong (the
 * file, the entry and the rule), for people. `tessera catalog-load` prints both.
 */
import type { Reason } from '../protocol/reasons';

export type CatalogReason = Extract<
  Reason,
  'file_unreadable' | 'bad_catalog_file' | 'bad_catalog_entry' | 'duplicate_entry' | 'too_many_versions'
>;

export class CatalogRefusal extends Error {
  constructor(
    readonly reason: CatalogReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

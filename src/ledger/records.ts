import type { Context } from '../app/context';

/** A stream entry's fields by name, from its flat list. */
export type DecodeFields = (flat: readonly string[]) => Record<string, string>;

export const namedFields: DecodeFields = (flat) => {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
  return fields;
};

/**
 * One bucket's record stream (calls, sales or redemptions), oldest first, read
 * in pages of XRANGE: one key, so one slot, and it works on a cluster too.
 */
export async function* readStream(
  ctx: Context,
  key: string,
  since = '-',
  until = '+',
  decode: DecodeFields = namedFields,
): AsyncGenerator<{ id: string; fields: Record<string, string> }> {
  let from = since;
  for (;;) {
    const page = await ctx.redis.xrange(key, from, until, 'COUNT', 1000);
    for (const [id, flat] of page) yield { id, fields: decode(flat) };
    if (page.length < 1000) return;
    from = `(${page[page.length - 1]![0]}`;
  }
}

/** One record by its stream id, with the id as `record`; undefined when there is none. */
export async function recordAt(
  ctx: Context,
  stream: string,
  id: string | null | undefined,
): Promise<Record<string, string> | undefined> {
  if (!id) return undefined;
  const [entry] = await ctx.redis.xrange(stream, id, id);
  if (!entry) return undefined;
  return { record: entry[0], ...namedFields(entry[1]) };
}

import type { Context } from '../app/context';

/**
 * One bucket's record stream (calls, sales or redemptions), oldest first, read
 * in pages of XRANGE: one key, so one slot, and it works on a cluster too.
 */
export async function* readStream(ctx: Context, key: string, since = '-', until = '+'): AsyncGenerator<{ id: string; fields: Record<string, string> }> {
  let from = since;
  for (;;) {
    const page = await ctx.redis.xrange(key, from, until, 'COUNT', 1000);
    for (const [id, flat] of page) {
      const fields: Record<string, string> = {};
      for (let i = 0; i < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
      yield { id, fields };
    }
    if (page.length < 1000) return;
    from = `(${page[page.length - 1]![0]}`;
  }
}

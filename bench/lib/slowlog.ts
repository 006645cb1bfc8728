/**
 * Redis' own record of its slowest commands (SLOWLOG, every command over
 * slowlog-log-slower-than, 10 ms by default) over a benchmark's load: when
 * every client stalls at once while no process is short of CPU, this names
 * the command Redis was busy with. FCALL is named by the script it ran.
 */
import type { Context } from '../../src/app/context';

export interface SlowCommand {
  /** The command, or `FCALL <script>` for a script of lua/. */
  command: string;
  /** Unix time (s) it started, and how long it ran (ms). */
  at: number;
  ms: number;
}

/** Empties the slow log, so that what it holds afterwards came from the load. */
export async function resetSlowlog(ctx: Context): Promise<void> {
  await ctx.redis.call('SLOWLOG', 'RESET');
}

/** The slowest `n` commands logged since the reset, slowest first. */
export async function slowestCommands(ctx: Context, n = 5): Promise<SlowCommand[]> {
  const names = new Map([...ctx.scripts.library.functions].map(([name, fn]) => [fn, name]));
  const entries = (await ctx.redis.call('SLOWLOG', 'GET', '128')) as [number, number, number, string[]][];
  return entries
    .map(([, at, us, args]) => {
      const [cmd = '?', fn = ''] = args;
      const command = /^fcall$/i.test(cmd) ? `FCALL ${names.get(fn) ?? fn}` : cmd.toUpperCase();
      return { command, at, ms: Math.round(us / 100) / 10 };
    })
    .sort((a, b) => b.ms - a.ms)
    .slice(0, n);
}

export const fmtSlowCommands = (list: SlowCommand[]): string =>
  list.length ? list.map((c) => `${c.command} ${c.ms} ms`).join(', ') : 'none over slowlog-log-slower-than';

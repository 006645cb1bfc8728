/** The benchmarks' command lines: strict flags, --help, checked integers, --gw-env. */
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** The command line's flags (strict, no positionals), plus --help: prints usage and exits 0. */
export function parseFlags<O extends NonNullable<ParseArgsConfig['options']>>(
  argv: string[],
  options: O,
  usage: string,
) {
  const { values } = parseArgs({
    args: argv,
    options: { ...options, help: { type: 'boolean', default: false } },
    strict: true,
    allowPositionals: false,
  });
  if ((values as { help?: boolean }).help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  return values;
}

/** An integer flag value in min..max, else an error naming the flag. */
export function intFlag(name: string, v: string | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(`--${name}: expected an integer in ${min}..${max}, got ${v}`);
  return n;
}

/** The repeatable --gw-env K=V flag as an environment. */
export const gwEnvFlag = (list: string[] | undefined): Record<string, string> => pairsFlag('gw-env', list);

/** A repeatable K=V flag (--gw-env, --redis-config) as an object. */
export function pairsFlag(name: string, list: string[] | undefined): Record<string, string> {
  const pairs: Record<string, string> = {};
  for (const kv of list ?? []) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new Error(`--${name}: K=V, got ${kv}`);
    pairs[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return pairs;
}

/**
 * What every CLI command is and the helpers the command groups share: option
 * parsing, usage errors, printing an outcome, opening an output file. Command
 * groups import this module, never main.ts, so the entry point and its
 * commands do not import each other.
 */
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { Context } from '../app/context';
import { messageOf } from '../protocol/reasons';

/** `npx tessera <command> …`: operator tasks against the same Redis the gateway uses. */
export interface Cli {
  ctx: () => Promise<Context>;
  args: string[];
  out: (line: string) => void;
}

export interface Command {
  summary: string;
  usage?: string;
  run(cli: Cli): Promise<number | void>;
}

/**
 * The command's options, strictly, and exactly `positionals` positional
 * arguments. Its errors carry an ERR_PARSE_ARGS code, which runCli turns into
 * exit code 2.
 */
export const parseOptions = <O extends NonNullable<ParseArgsConfig['options']>>(
  cli: Cli,
  options: O,
  positionals = 0,
) => {
  const r = parseArgs({ args: cli.args, options, allowPositionals: true, strict: true });
  if (r.positionals.length > positionals)
    throw Object.assign(new Error(`unexpected argument: ${r.positionals[positionals]}`), {
      code: 'ERR_PARSE_ARGS_UNEXPECTED',
    });
  if (r.positionals.length < positionals)
    throw Object.assign(new Error('missing argument'), { code: 'ERR_PARSE_ARGS_MISSING' });
  return r;
};

/** A bad option value: exit code 2, like a parse error. */
export const usageError = (message: string): Error =>
  Object.assign(new Error(message), { code: 'ERR_PARSE_ARGS_VALUE' });

/** The longest free text (a reason, a note, a reference) the CLI stores: what the HTTP API takes (protocol/admin.ts). */
export const TEXT_MAX = 200;

/** A free-text option: at most TEXT_MAX characters, as over HTTP, or exit 2. */
export const textArg = (v: string | undefined, what: string): string | undefined => {
  if (v !== undefined && v.length > TEXT_MAX) throw usageError(`${what} must be at most ${TEXT_MAX} characters`);
  return v;
};

/**
 * A whole-number option, or exit 2 naming the range it must be in (`unit` says what the
 * number counts): one message for a typo, a negative and a number too large alike.
 * Decimal digits only: Number() alone would take `1e12`, `0x10` and a blank (as 0).
 */
export const intArg = (v: unknown, what: string, range: { min?: number; max?: number; unit?: string } = {}): number => {
  const { min = 0, max, unit } = range;
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : NaN;
  if (Number.isSafeInteger(n) && n >= min && (max === undefined || n <= max)) return n;
  if (max === undefined) throw usageError(`${what} must be a whole number${min > 0 ? ` from ${min}` : ''}`);
  throw usageError(`${what} must be ${min} to ${max}${unit ? ` (${unit})` : ''}`);
};

/**
 * Prints an Outcome as JSON; a refusal goes to stderr and exits 1, as
 * `refused: <reason>: <what it means>`: the reason for scripts, the catalogue's words for people.
 */
export function outcome(cli: Cli, r: { ok: boolean; reason?: string }): number {
  if (!r.ok) {
    const reason = String(r.reason);
    process.stderr.write(`refused: ${reason}: ${messageOf(reason)}\n`);
    return 1;
  }
  const { ok: _ok, ...rest } = r;
  cli.out(JSON.stringify(rest, null, 2));
  return 0;
}

/**
 * Opens the output before any work is done, so a file that cannot be created
 * fails the command before IDs exist whose numbers would be lost. IDs and
 * records are sensitive: files are created readable by the operator only, and
 * never overwritten.
 */
/** Where a command writes what it makes: a new file, or stdout. `closed` says why writing stopped (a reader gone). */
export interface Out {
  write: (s: string) => void;
  done: () => Promise<void>;
  closed: () => string | undefined;
}

export function openOut(path: string | undefined): Out {
  if (!path) {
    // A reader that went away (`| head`) fails the writes after it with EPIPE, as an 'error' event:
    // unheard, it would crash the process with a stack trace mid-command.
    let closed: string | undefined;
    const onError = (err: NodeJS.ErrnoException): void => {
      closed ??= `output closed (${err.code ?? err.message})`;
    };
    process.stdout.on('error', onError);
    return {
      write: (s) => void (closed === undefined && process.stdout.write(s)),
      done: async () => void process.stdout.off('error', onError),
      closed: () => closed,
    };
  }
  const fd = openSync(path, 'wx', 0o600);
  // Written through at once (no buffer in the process) and synced to disk when done.
  return {
    write: (s) => writeSync(fd, s),
    done: async () => {
      fsyncSync(fd);
      closeSync(fd);
    },
    closed: () => undefined,
  };
}

/** The `tessera` entry point: picks the command, gives it its context, maps errors to exit codes. */
import { openContext, type Context } from '../app/context';
import { ConfigError, loadConfig } from '../config/config';
import { createLogger } from '../observability/log';
import type { Cli, Command } from './command';
import { commands } from './commands';

const USAGE = `usage: tessera <command> [options]

${Object.entries(commands)
  .map(([name, c]) => `  ${name.padEnd(16)} ${c.summary}\n${c.usage ? `  ${''.padEnd(16)} ${c.usage}\n` : ''}`)
  .join('')}
\`tessera <command> --help\` prints one command's usage.
Redis: REDIS_URL or REDIS_CLUSTER, else the embedded Redis of a running \`npm start\`.`;

/** One command's usage: what `tessera <command> --help` and `tessera help <command>` print. */
const usageOf = (name: string, c: Command): string =>
  `usage: tessera ${name}${c.usage ? ` ${c.usage}` : ''}\n\n  ${c.summary}\n`;

/** --help or -h among a command's arguments (before a `--`, after which arguments are taken as they are). */
function asksHelp(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

export async function runCli(argv: string[]): Promise<number> {
  // `tessera help mint` is `tessera mint --help`.
  if (argv[0] === 'help' && argv.length > 1) argv = [...argv.slice(1), '--help'];
  // `tessera token create` and `tessera token-create` are the same command.
  if (argv.length >= 2 && commands[`${argv[0]}-${argv[1]}`]) argv = [`${argv[0]}-${argv[1]}`, ...argv.slice(2)];
  const [name, ...rest] = argv;
  const cmd = name ? commands[name] : undefined;
  if (cmd && asksHelp(rest)) {
    process.stdout.write(usageOf(name!, cmd));
    return 0;
  }
  if (!cmd) {
    // Asked for (`tessera help`), the list goes to stdout, as one command's usage does (`| less`);
    // after an unknown command or none, to stderr with exit 2.
    const asked = name === 'help' || name === '--help';
    if (asked) process.stdout.write(`${USAGE}\n`);
    else process.stderr.write(`${name ? `unknown command: ${name}\n` : ''}${USAGE}\n`);
    return asked ? 0 : 2;
  }
  let ctx: Context | undefined;
  try {
    const cfg = loadConfig();
    const log = createLogger(process.env.LOG_LEVEL ?? 'warn', 'tessera-cli', 2);
    const cli: Cli = {
      args: rest,
      out: (line) => process.stdout.write(line + '\n'),
      ctx: async () => (ctx ??= await openContext(cfg, log)),
    };
    return (await cmd.run(cli)) ?? 0;
  } catch (err) {
    const usage = err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`tessera ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    return usage ? 2 : 1;
  } finally {
    await ctx?.close();
  }
}

/**
 * Exits once stdout and stderr have handed the OS all they were given: a pipe
 * to a slower reader (`| tee`, `| gzip`, ssh) holds the rest in this process,
 * and process.exit would drop it (the IDs of a mint, whose numbers exist
 * nowhere else, and the end of an export).
 */
export async function exitWhenWritten(code: number): Promise<never> {
  for (const s of [process.stdout, process.stderr]) {
    if (s.destroyed) continue;
    // A reader that went away (EPIPE) was the command's to report; nothing is left to hand over then.
    s.on('error', () => undefined);
    await new Promise<void>((r) => s.write('', () => r()));
  }
  process.exit(code);
}

if (require.main === module) {
  void runCli(process.argv.slice(2)).then(exitWhenWritten);
}

/** Client tokens: create (the secret is printed once), list, revoke. */
import type { Role } from '../../catalog/schema';
import {
  TokenNameTaken,
  createToken,
  readCatalog,
  revokeTokens,
  tokenId,
  tokenProblem,
  updateTokens,
} from '../../catalog/store';
import { messageOf } from '../../protocol/reasons';
import { parseOptions, usageError, type Cli, type Command } from '../command';

/** A name the command must have: without one it would match no token, silently. */
function nameOf(name: string | undefined): string {
  if (!name) throw usageError('--name is required');
  return name;
}

/** How many tokens a name matched: none is a mistyped name, said and exit 1, not "0 token(s)". */
function matched(cli: Cli, verb: string, name: string, n: number): number {
  if (n === 0) {
    process.stderr.write(`no token is named ${name}\n`);
    return 1;
  }
  cli.out(`${verb} ${n} token(s)`);
  return 0;
}

export const tokenCommands: Record<string, Command> = {
  'token-create': {
    summary: 'create a client token (printed once; Redis keeps only its hash)',
    usage: '--role switch|scanner|sales|admin --name NAME [--venue V] [--gate G]',
    async run(cli) {
      const { values } = parseOptions(cli, {
        role: { type: 'string' },
        name: { type: 'string' },
        venue: { type: 'string' },
        gate: { type: 'string' },
      });
      const spec = {
        name: nameOf(values.name),
        role: values.role as Role,
        ...(values.venue ? { venue: values.venue } : {}),
        ...(values.gate ? { gate: values.gate } : {}),
      };
      // A grant no token may have is the command line's mistake: exit 2, before Redis is touched.
      const problem = tokenProblem({ ...spec, created: Date.now() });
      if (problem) throw usageError(problem);
      try {
        const { token, id, info } = await createToken((await cli.ctx()).redis, spec);
        cli.out(JSON.stringify({ token, id, ...info }));
      } catch (err) {
        if (!(err instanceof TokenNameTaken)) throw err;
        // Which role holds it, so the operator can tell a typo from a name already in use.
        process.stderr.write(`refused: ${err.reason}: ${messageOf(err.reason)} (${err.message})\n`);
        return 1;
      }
    },
  },
  'token-list': {
    summary: 'list tokens (ids, names and roles, never the secrets)',
    async run(cli) {
      const cat = await readCatalog((await cli.ctx()).redis);
      for (const [hash, t] of cat.tokens) cli.out(JSON.stringify({ id: tokenId(hash), ...t }));
    },
  },
  'token-update': {
    summary: 'change the role, venue or gate of every token with this name (open connections are closed)',
    usage: "--name NAME [--role R] [--venue V | --venue ''] [--gate G | --gate '']",
    async run(cli) {
      const { values } = parseOptions(cli, {
        name: { type: 'string' },
        role: { type: 'string' },
        venue: { type: 'string' },
        gate: { type: 'string' },
      });
      const name = nameOf(values.name);
      if (values.role === undefined && values.venue === undefined && values.gate === undefined)
        throw usageError("nothing to change: give --role, --venue or --gate ('' clears a venue or gate)");
      const n = await updateTokens((await cli.ctx()).redis, name, {
        ...(values.role ? { role: values.role as Role } : {}),
        ...(values.venue !== undefined ? { venue: values.venue } : {}),
        ...(values.gate !== undefined ? { gate: values.gate } : {}),
      });
      return matched(cli, 'updated', name, n);
    },
  },
  'token-revoke': {
    summary: 'revoke every token with this name, or only the one with --id (a rotation keeps the name)',
    usage: '--name NAME [--id ID]',
    async run(cli) {
      const { values } = parseOptions(cli, { name: { type: 'string' }, id: { type: 'string' } });
      const name = nameOf(values.name);
      if (values.id === '') throw usageError('--id is empty: give the id token-list shows');
      const n = await revokeTokens((await cli.ctx()).redis, name, values.id);
      if (n === 0 && values.id !== undefined) {
        process.stderr.write(`no token named ${name} has the id ${values.id}\n`);
        return 1;
      }
      return matched(cli, 'revoked', name, n);
    },
  },
};

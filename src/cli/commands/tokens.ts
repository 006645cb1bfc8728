/** Client tokens: create (the secret is printed once), list, revoke. */
import type { Role } from '../../catalog/schema';
import { createToken, readCatalog, revokeTokens, updateTokens } from '../../catalog/store';
import { parseOptions, type Command } from '../command';

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
      const { token, info } = await createToken((await cli.ctx()).redis, {
        name: values.name ?? '',
        role: values.role as Role,
        ...(values.venue ? { venue: values.venue } : {}),
        ...(values.gate ? { gate: values.gate } : {}),
      });
      cli.out(JSON.stringify({ token, ...info }));
    },
  },
  'token-list': {
    summary: 'list tokens (names and roles, never the secrets)',
    async run(cli) {
      const cat = await readCatalog((await cli.ctx()).redis);
      for (const t of cat.tokens.values()) cli.out(JSON.stringify(t));
    },
  },
  'token-update': {
    summary: 'change the role, venue or gate of every token with this name (open connections are closed)',
    usage: "--name NAME [--role R] [--venue V] [--gate G | --gate '']",
    async run(cli) {
      const { values } = parseOptions(cli, {
        name: { type: 'string' },
        role: { type: 'string' },
        venue: { type: 'string' },
        gate: { type: 'string' },
      });
      const n = await updateTokens((await cli.ctx()).redis, values.name ?? '', {
        ...(values.role ? { role: values.role as Role } : {}),
        ...(values.venue ? { venue: values.venue } : {}),
        ...(values.gate !== undefined ? { gate: values.gate } : {}),
      });
      cli.out(`updated ${n} token(s)`);
    },
  },
  'token-revoke': {
    summary: 'revoke every token with this name',
    usage: '--name NAME',
    async run(cli) {
      const { values } = parseOptions(cli, { name: { type: 'string' } });
      cli.out(`revoked ${await revokeTokens((await cli.ctx()).redis, values.name ?? '')} token(s)`);
    },
  },
};

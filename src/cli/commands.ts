import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { activateId, idStatus, setIdState } from '../admin/ids';
import { readItemsFile, readPlansFile, readProductsFile } from '../catalog/files';
import type { Role } from '../catalog/schema';
import { createToken, putItems, putPlans, putProducts, readCatalog, revokeTokens } from '../catalog/store';
import { mintIds } from '../ids/mint';
import { findRepoDir } from '../redis/scripts';
import { exportRecords } from './export';
import { runDemoCall } from './call';
import type { Cli } from './main';

export interface Command {
  summary: string;
  usage?: string;
  run(cli: Cli): Promise<number | void>;
}

const opts = <O extends NonNullable<ParseArgsConfig['options']>>(cli: Cli, options: O, positionals = 0) => {
  const r = parseArgs({ args: cli.args, options, allowPositionals: true, strict: true });
  if (r.positionals.length > positionals) throw Object.assign(new Error(`unexpected argument: ${r.positionals[positionals]}`), { code: 'ERR_PARSE_ARGS_UNEXPECTED' });
  if (r.positionals.length < positionals) throw Object.assign(new Error('missing argument'), { code: 'ERR_PARSE_ARGS_MISSING' });
  return r;
};

const intArg = (v: unknown, what: string): number => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw Object.assign(new Error(`${what} must be a whole number`), { code: 'ERR_PARSE_ARGS_VALUE' });
  return n;
};

/** Prints an Outcome as JSON; a refusal goes to stderr and exits 1. */
function outcome(cli: Cli, r: { ok: boolean; reason?: string }): number {
  if (!r.ok) {
    process.stderr.write(`refused: ${r.reason}\n`);
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
function openOut(path: string | undefined): { write: (s: string) => void; done: () => Promise<void> } {
  if (!path) return { write: (s) => process.stdout.write(s), done: async () => undefined };
  const fd = openSync(path, 'wx', 0o600);
  return { write: (s) => writeSync(fd, s), done: async () => closeSync(fd) };
}

export const commands: Record<string, Command> = {
  'catalog-load': {
    summary: 'load products, rate plans and venue items into Redis (gateways refresh at once)',
    usage: '[--products FILE.json|csv] [--plans FILE.json|csv] [--items FILE.json|csv]',
    async run(cli) {
      const { values } = opts(cli, { products: { type: 'string' }, plans: { type: 'string' }, items: { type: 'string' } });
      if (!values.products && !values.plans && !values.items) throw Object.assign(new Error('give --products, --plans and/or --items'), { code: 'ERR_PARSE_ARGS_MISSING' });
      const ctx = await cli.ctx();
      if (values.items) cli.out(`loaded ${(await putItems(ctx.redis, readItemsFile(values.items))).length} item(s)`);
      // Plans first, so no product ever points at a plan the gateways do not have yet.
      if (values.plans) cli.out(`loaded ${(await putPlans(ctx.redis, readPlansFile(values.plans))).length} rate plan(s)`);
      if (values.products) cli.out(`loaded ${(await putProducts(ctx.redis, readProductsFile(values.products))).length} product(s)`);
    },
  },
  'catalog-show': {
    summary: 'print the catalog as JSON',
    async run(cli) {
      const cat = await readCatalog((await cli.ctx()).redis);
      cli.out(JSON.stringify({ version: cat.version, products: [...cat.products.values()], plans: [...cat.plans.values()], items: [...cat.items.values()] }, null, 2));
    },
  },
  mint: {
    summary: 'mint IDs into a product\'s inventory; prints them (or writes --out, mode 0600) once',
    usage: '--product NAME --count N [--out FILE]',
    async run(cli) {
      const { values } = opts(cli, { product: { type: 'string' }, count: { type: 'string' }, out: { type: 'string' } });
      const count = intArg(values.count, '--count');
      const ctx = await cli.ctx();
      const product = (await readCatalog(ctx.redis)).products.get(values.product ?? '');
      if (!product) throw new Error(`unknown product: ${values.product}`);
      const out = openOut(values.out);
      const t0 = Date.now();
      let buf = '';
      const n = await mintIds(ctx, product, count, (id) => {
        buf += id + '\n';
        if (buf.length > 1 << 16) {
          out.write(buf);
          buf = '';
        }
      });
      out.write(buf);
      await out.done();
      process.stderr.write(`minted ${n} ID(s) of ${product.name} in ${Date.now() - t0} ms${values.out ? ` into ${values.out}` : ''}\n`);
    },
  },
  activate: {
    summary: 'sell an ID by hand: loads its face value and records the sale',
    usage: 'ID [--price MICRO] [--ref TEXT]',
    async run(cli) {
      const { values, positionals } = opts(cli, { price: { type: 'string' }, ref: { type: 'string' } }, 1);
      const price = values.price === undefined ? undefined : intArg(values.price, '--price');
      return outcome(cli, await activateId(await cli.ctx(), positionals[0], { channel: 'manual', price, ref: values.ref ?? process.env.USER ?? '' }));
    },
  },
  block: {
    summary: 'block an ID (its live calls are cut at their next tick)',
    usage: 'ID [--reason TEXT]',
    async run(cli) {
      const { values, positionals } = opts(cli, { reason: { type: 'string' } }, 1);
      return outcome(cli, await setIdState(await cli.ctx(), positionals[0], 'block', values.reason ?? ''));
    },
  },
  unblock: {
    summary: 'lift a block',
    usage: 'ID',
    async run(cli) {
      const { positionals } = opts(cli, {}, 1);
      return outcome(cli, await setIdState(await cli.ctx(), positionals[0], 'unblock'));
    },
  },
  lookup: {
    summary: 'show an ID\'s state, balance and expiry',
    usage: 'ID',
    async run(cli) {
      const { positionals } = opts(cli, {}, 1);
      return outcome(cli, await idStatus(await cli.ctx(), positionals[0]));
    },
  },
  'token-create': {
    summary: 'create a client token (printed once; Redis keeps only its hash)',
    usage: '--role switch|scanner|sales|admin --name NAME [--venue V] [--gate G]',
    async run(cli) {
      const { values } = opts(cli, { role: { type: 'string' }, name: { type: 'string' }, venue: { type: 'string' }, gate: { type: 'string' } });
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
  'token-revoke': {
    summary: 'revoke every token with this name',
    usage: '--name NAME',
    async run(cli) {
      const { values } = opts(cli, { name: { type: 'string' } });
      cli.out(`revoked ${await revokeTokens((await cli.ctx()).redis, values.name ?? '')} token(s)`);
    },
  },
  export: {
    summary: 'export records: calls (CDRs), redemptions or sales, as CSV or NDJSON',
    usage: 'calls|redemptions|sales [--format csv|ndjson] [--since MS] [--until MS] [--out FILE]',
    async run(cli) {
      const { values, positionals } = opts(cli, { format: { type: 'string', default: 'csv' }, since: { type: 'string' }, until: { type: 'string' }, out: { type: 'string' } }, 1);
      const kind = positionals[0];
      if (kind !== 'calls' && kind !== 'sales' && kind !== 'redemptions') throw Object.assign(new Error('export calls|redemptions|sales'), { code: 'ERR_PARSE_ARGS_VALUE' });
      if (values.format !== 'csv' && values.format !== 'ndjson') throw Object.assign(new Error('--format csv|ndjson'), { code: 'ERR_PARSE_ARGS_VALUE' });
      const out = openOut(values.out);
      const n = await exportRecords(await cli.ctx(), kind, values.format, out.write, {
        since: values.since === undefined ? undefined : intArg(values.since, '--since'),
        until: values.until === undefined ? undefined : intArg(values.until, '--until'),
      });
      await out.done();
      process.stderr.write(`exported ${n} record(s)\n`);
    },
  },
  demo: {
    summary: 'load the demo catalog, create demo tokens, mint and activate one demo ID',
    async run(cli) {
      const ctx = await cli.ctx();
      const dir = findRepoDir(join('deploy', 'demo'));
      await putPlans(ctx.redis, readPlansFile(join(dir, 'rates.csv')));
      const products = await putProducts(ctx.redis, readProductsFile(join(dir, 'products.json')));
      const sw = await createToken(ctx.redis, { name: `demo-switch-${Date.now().toString(36)}`, role: 'switch' });
      const admin = await createToken(ctx.redis, { name: `demo-admin-${Date.now().toString(36)}`, role: 'admin' });
      const ids: string[] = [];
      await mintIds(ctx, products[0]!, 1, (id) => ids.push(id));
      const act = await activateId(ctx, ids[0], { channel: 'manual', price: products[0]!.price, ref: 'demo' });
      if (!act.ok) throw new Error(`activation failed: ${act.reason}`);
      cli.out(JSON.stringify({ id: ids[0], product: products[0]!.name, balance: act.balance, switchToken: sw.token, adminToken: admin.token }, null, 2));
    },
  },
  call: {
    summary: 'act as a switch: place one call and print what the gateway says',
    usage: '--id ID --dest DIGITS --token SWITCH_TOKEN [--url ws://localhost:8080/v1/switch] [--seconds N] [--json]',
    async run(cli) {
      const { values } = opts(cli, {
        id: { type: 'string' },
        dest: { type: 'string' },
        token: { type: 'string' },
        url: { type: 'string', default: `ws://localhost:${process.env.PORT ?? 8080}/v1/switch` },
        seconds: { type: 'string', default: '0' },
        json: { type: 'boolean', default: false },
      });
      return runDemoCall({
        url: values.url!,
        token: values.token ?? '',
        id: values.id ?? '',
        dest: values.dest ?? '',
        seconds: intArg(values.seconds, '--seconds'),
        json: values.json ?? false,
        out: cli.out,
      });
    },
  },
};

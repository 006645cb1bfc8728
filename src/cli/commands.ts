import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { audit } from '../ledger/audit';
import { activateId, idStatus, setIdState } from '../ledger/ids';
import { readAccessFile, readItemsFile, readPlansFile, readProductsFile } from '../catalog/files';
import type { Role } from '../catalog/schema';
import { createToken, putAccess, putItems, putPlans, putProducts, readCatalog, revokeTokens } from '../catalog/store';
import { loadConfig } from '../config/config';
import { luhnValid } from '../ids/luhn';
import { mintIds } from '../ledger/mint';
import { findRepoDir } from '../redis/scripts';
import { lookupSale } from '../ledger/sale-lookup';
import { refundSale } from '../sales/admin';
import { Inventory } from '../sales/inventory';
import { HttpProvider } from '../sales/provider';
import { DEMO_MEMBERS, readMembers, Sandbox, type Member } from '../dev/sandbox';
import { exportRecords } from '../ledger/export';
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

const usageError = (message: string): Error => Object.assign(new Error(message), { code: 'ERR_PARSE_ARGS_VALUE' });

const intArg = (v: unknown, what: string): number => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw usageError(`${what} must be a whole number`);
  return n;
};

/**
 * A members file for the sandbox card company, checked here because the
 * sandbox takes it as is: a member it could never approve (card failing the
 * Luhn check, numeric PIN, no limit) is an error now rather than a puzzling
 * decline later.
 */
function checkMembers(json: unknown, file: string): Member[] {
  const list = Array.isArray(json) ? json : (json as { members?: unknown } | null)?.members;
  if (!Array.isArray(list) || list.length === 0) throw new Error(`${file}: expected a non-empty array of members, or {"members": [...]}`);
  const seen = new Set<string>();
  return list.map((m: Record<string, unknown>, i) => {
    const bad = (what: string): never => {
      throw new Error(`${file}: member #${i + 1}: ${what}`);
    };
    if (typeof m !== 'object' || m === null) bad('not an object');
    const { name, card, pin, limit, used = 0 } = m;
    if (typeof name !== 'string' || !name) bad('name must be a non-empty string');
    if (typeof card !== 'string' || !/^[0-9]{12,19}$/.test(card) || !luhnValid(card)) bad('card must be 12 to 19 digits (a string) with a valid Luhn check digit');
    if (typeof pin !== 'string' || !/^[0-9]{1,12}$/.test(pin)) bad('pin must be a string of 1 to 12 digits');
    if (!Number.isSafeInteger(limit) || (limit as number) < 0) bad('limit must be a whole number of micro-units');
    if (!Number.isSafeInteger(used) || (used as number) < 0) bad('used must be a whole number of micro-units');
    if (seen.has(card as string)) bad(`card ${card as string} appears twice`);
    seen.add(card as string);
    return { name, card, pin, limit, used } as Member;
  });
}

/** Micro-units as a plain amount with two decimals (the sandbox's members have no currency). */
const amount = (micro: number): string => (micro / 1e6).toFixed(2);

function readIfExists(file: string): string | undefined {
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
}

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
    summary: 'load products, rate plans, venue items and access numbers into Redis (gateways refresh at once)',
    usage: '[--products FILE.json|csv] [--plans FILE.json|csv] [--items FILE.json|csv] [--access FILE.json|csv]',
    async run(cli) {
      const { values } = opts(cli, { products: { type: 'string' }, plans: { type: 'string' }, items: { type: 'string' }, access: { type: 'string' } });
      if (!values.products && !values.plans && !values.items && !values.access) {
        throw Object.assign(new Error('give --products, --plans and/or --items, or --access'), { code: 'ERR_PARSE_ARGS_MISSING' });
      }
      // Every file is read (and parsed) before anything is written: one that cannot be read loads nothing.
      const items = values.items ? readItemsFile(values.items) : undefined;
      const plans = values.plans ? readPlansFile(values.plans) : undefined;
      const products = values.products ? readProductsFile(values.products) : undefined;
      const access = values.access ? readAccessFile(values.access) : undefined;
      const ctx = await cli.ctx();
      if (items) cli.out(`loaded ${(await putItems(ctx.redis, items)).length} item(s)`);
      // Plans first, so no product ever points at a plan the gateways do not have yet.
      if (plans) cli.out(`loaded ${(await putPlans(ctx.redis, plans)).length} rate plan(s)`);
      if (products) cli.out(`loaded ${(await putProducts(ctx.redis, products)).length} product(s)`);
      if (access) cli.out(`loaded ${(await putAccess(ctx.redis, access)).length} access area(s)`);
    },
  },
  'catalog-show': {
    summary: 'print the catalog as JSON (products, rate plans, venue items, access areas)',
    async run(cli) {
      const cat = await readCatalog((await cli.ctx()).redis);
      cli.out(
        JSON.stringify({ version: cat.version, products: [...cat.products.values()], plans: [...cat.plans.values()], items: [...cat.items.values()], access: [...cat.access.values()] }, null, 2),
      );
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
  audit: {
    summary: 'conservation check, from Redis alone: for every ID, value sold = balance + calls + redemptions + refunds; exit 1 on any difference',
    usage: '[--json] [--max N]',
    async run(cli) {
      const { values } = opts(cli, { json: { type: 'boolean', default: false }, max: { type: 'string', default: '50' } });
      const max = intArg(values.max, '--max');
      const r = await audit(await cli.ctx());
      if (values.json) process.stdout.write(JSON.stringify({ ...r, ok: r.problems.length === 0 }) + '\n');
      else {
        const n = (v: number): string => v.toLocaleString('en');
        process.stdout.write(
          `${n(r.ids)} IDs, ${n(r.sold)} sold: value sold ${n(r.valueSold)} = balances ${n(r.balances)} + calls ${n(r.calls)} + redemptions ${n(r.redeemed)} + refunds ${n(r.refunded)}\n`,
        );
        for (const p of r.problems.slice(0, max)) {
          process.stdout.write(`  bucket ${p.bucket} id ${p.id} (${p.state || 'no ID'}): ${p.problem}; sold ${p.sold}, balance ${p.balance}, calls ${p.calls}, redeemed ${p.redeemed}, refunded ${p.refunded}, difference ${p.difference}\n`);
        }
        if (r.problems.length > max) process.stdout.write(`  … and ${r.problems.length - max} more (--max, --json)\n`);
        process.stdout.write(r.problems.length === 0 ? 'audit: ok, every ID balances\n' : `audit: ${r.problems.length} ID(s) do not balance\n`);
      }
      return r.problems.length === 0 ? 0 : 1;
    },
  },
  'sale-lookup': {
    summary: 'show a sold ID: its state and balance, its sale record (price, provider reference, commission, net) and any refund',
    usage: 'ID',
    async run(cli) {
      const { positionals } = opts(cli, {}, 1);
      return outcome(cli, await lookupSale(await cli.ctx(), positionals[0]));
    },
  },
  'sale-refund': {
    summary: 'refund an unused sold ID: block it, record the refund, void the payment at the card company (PROVIDER_URL)',
    usage: 'ID [--reason TEXT]',
    async run(cli) {
      const { values, positionals } = opts(cli, { reason: { type: 'string' } }, 1);
      // Checked before Redis is touched: without the card company nothing should change.
      const cfg = loadConfig();
      const { key, timeoutMs } = cfg.provider;
      // With npm start's own sandbox, the gateway writes where it listens next to redis.url.
      const url = cfg.provider.url ?? readIfExists(join(cfg.dataDir, 'provider.url'));
      if (!url) {
        throw Object.assign(
          new Error(
            'PROVIDER_URL is not set: a refund voids the payment at the card company, so the CLI must know where it is. ' +
              "Set PROVIDER_URL (and PROVIDER_KEY) as the gateway has them; with `npm start`'s own sandbox, use the URL it logs at start, " +
              'or refund through the gateway: POST /v1/admin/sales/{id}/refund with an admin token',
          ),
          { code: 'ERR_PARSE_ARGS_MISSING' },
        );
      }
      const ctx = await cli.ctx();
      const operator = `cli:${process.env.USER ?? process.env.LOGNAME ?? 'unknown'}`;
      const r = await refundSale(ctx, new HttpProvider(url, timeoutMs, key), positionals[0], values.reason ?? '', operator);
      const code = outcome(cli, r);
      if (r.ok && r.provider !== 'voided' && r.provider !== 'not_paid_through_a_provider') {
        // The ID is blocked and the refund recorded either way; only the money is in doubt.
        process.stderr.write(`the card company did not confirm the void (${r.provider}): run the same refund again, it only repeats the void\n`);
        return 1;
      }
      return code;
    },
  },
  'sandbox-provider': {
    summary: 'run the sandbox card company (test members, no real money) in the foreground until Ctrl-C; needs no Redis',
    usage: '[--port N] [--host ADDR] [--members FILE.json] [--commission-bp N] [--latency-ms N] [--fail-rate F]',
    async run(cli) {
      const { values } = opts(cli, {
        port: { type: 'string' },
        host: { type: 'string', default: '127.0.0.1' },
        members: { type: 'string' },
        'commission-bp': { type: 'string', default: '250' },
        'latency-ms': { type: 'string', default: '0' },
        'fail-rate': { type: 'string', default: '0' },
      });
      const port = values.port === undefined ? loadConfig().provider.sandboxPort : intArg(values.port, '--port');
      if (port > 65535) throw usageError('--port must be 0 to 65535');
      const commissionBp = intArg(values['commission-bp'], '--commission-bp');
      if (commissionBp > 10_000) throw usageError('--commission-bp must be 0 to 10000 (basis points: 250 = 2.5%)');
      const latencyMs = intArg(values['latency-ms'], '--latency-ms');
      const failRate = Number(values['fail-rate']);
      if (!(failRate >= 0 && failRate <= 1)) throw usageError('--fail-rate must be between 0 and 1');
      const members = values.members ? checkMembers(readMembers(values.members), values.members) : DEMO_MEMBERS;

      const sandbox = new Sandbox({ members, commissionBp, faults: { latencyMs, failRate } });
      const host = values.host!;
      const bound = await sandbox.listen(port, host);
      const url = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host}:${bound}`;
      cli.out(`sandbox payment provider on ${url} (test members only, no real money)`);
      cli.out(`  point the gateway at it: PROVIDER_URL=${url}`);
      cli.out(`  commission ${commissionBp} bp (${(commissionBp / 100).toFixed(2)}%), latency ${latencyMs} ms, fail rate ${failRate}`);
      cli.out('  members (card PIN, credit used / limit):');
      for (const m of sandbox.members.values()) cli.out(`    ${m.name.padEnd(20)} card ${m.card}  card PIN ${m.pin.padEnd(5)} ${amount(m.used)} / ${amount(m.limit)}`);
      cli.out('  Ctrl-C stops it; payments are kept in memory only.');
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      await sandbox.close();
      cli.out('sandbox payment provider stopped');
    },
  },
  export: {
    summary: 'export records: calls (CDRs), redemptions or sales, as CSV or NDJSON',
    usage: 'calls|redemptions|sales [--format csv|ndjson] [--since MS] [--until MS] [--out FILE]',
    async run(cli) {
      const { values, positionals } = opts(cli, { format: { type: 'string', default: 'csv' }, since: { type: 'string' }, until: { type: 'string' }, out: { type: 'string' } }, 1);
      const kind = positionals[0];
      if (kind !== 'calls' && kind !== 'sales' && kind !== 'redemptions') throw usageError('export calls|redemptions|sales');
      if (values.format !== 'csv' && values.format !== 'ndjson') throw usageError('--format csv|ndjson');
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
    summary: 'load the demo catalog and access numbers, create demo tokens, mint and activate one demo ID, put 20 of each talk product on sale',
    async run(cli) {
      const ctx = await cli.ctx();
      const dir = findRepoDir(join('deploy', 'demo'));
      await putPlans(ctx.redis, readPlansFile(join(dir, 'rates.csv')));
      const products = await putProducts(ctx.redis, readProductsFile(join(dir, 'products.json')));
      const areas = await putAccess(ctx.redis, readAccessFile(join(dir, 'access.csv')));
      const sw = await createToken(ctx.redis, { name: `demo-switch-${Date.now().toString(36)}`, role: 'switch' });
      const admin = await createToken(ctx.redis, { name: `demo-admin-${Date.now().toString(36)}`, role: 'admin' });
      const ids: string[] = [];
      await mintIds(ctx, products[0]!, 1, (id) => ids.push(id));
      const act = await activateId(ctx, ids[0], { channel: 'manual', price: products[0]!.price, ref: 'demo' });
      if (!act.ok) throw new Error(`activation failed: ${act.reason}`);
      // Stock for the buy page: the numbers are not printed, buyers get them when they pay.
      const inventory = new Inventory(ctx);
      const onSale: Record<string, number> = {};
      for (const p of products.filter((x) => x.kind === 'talk')) {
        await mintIds(ctx, p, 20, () => undefined);
        onSale[p.name] = await inventory.available(p.name);
      }
      cli.out(
        JSON.stringify(
          { id: ids[0], product: products[0]!.name, balance: act.balance, switchToken: sw.token, adminToken: admin.token, onSale, accessAreas: areas.map((a) => a.area) },
          null,
          2,
        ),
      );
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

/** The sandbox card company (test members, no real money) run in the foreground. */
import { loadConfig } from '../../config/config';
import { DEMO_MEMBERS, readMembers, Sandbox, type Member } from '../../dev/sandbox';
import { luhnValid } from '../../ids/luhn';
import { intArg, parseOptions, usageError, type Command } from '../command';

/**
 * A members file for the sandbox card company, checked here because the
 * sandbox takes it as is: a member it could never approve (card failing the
 * Luhn check, numeric PIN, no limit) is an error now rather than a puzzling
 * decline later.
 */
function checkMembers(json: unknown, file: string): Member[] {
  const list = Array.isArray(json) ? json : (json as { members?: unknown } | null)?.members;
  if (!Array.isArray(list) || list.length === 0)
    throw new Error(`${file}: expected a non-empty array of members, or {"members": [...]}`);
  const seen = new Set<string>();
  return list.map((m: Record<string, unknown>, i) => {
    const bad = (what: string): never => {
      throw new Error(`${file}: member #${i + 1}: ${what}`);
    };
    if (typeof m !== 'object' || m === null) bad('not an object');
    const { name, card, pin, limit, used = 0 } = m;
    if (typeof name !== 'string' || !name) bad('name must be a non-empty string');
    if (typeof card !== 'string' || !/^[0-9]{12,19}$/.test(card) || !luhnValid(card))
      bad('card must be 12 to 19 digits (a string) with a valid Luhn check digit');
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

export const sandboxCommands: Record<string, Command> = {
  'sandbox-provider': {
    summary:
      'run the sandbox card company (test members, no real money) in the foreground until Ctrl-C; needs no Redis',
    usage: '[--port N] [--host ADDR] [--members FILE.json] [--commission-bp N] [--latency-ms N] [--fail-rate F]',
    async run(cli) {
      const { values } = parseOptions(cli, {
        port: { type: 'string' },
        host: { type: 'string', default: '127.0.0.1' },
        members: { type: 'string' },
        'commission-bp': { type: 'string', default: '250' },
        'latency-ms': { type: 'string', default: '0' },
        'fail-rate': { type: 'string', default: '0' },
      });
      const port =
        values.port === undefined ? loadConfig().provider.sandboxPort : intArg(values.port, '--port', { max: 65535 });
      const commissionBp = intArg(values['commission-bp'], '--commission-bp', {
        max: 10_000,
        unit: 'basis points: 250 = 2.5%',
      });
      const latencyMs = intArg(values['latency-ms'], '--latency-ms');
      const failRate = Number(values['fail-rate']);
      if (!(failRate >= 0 && failRate <= 1)) throw usageError('--fail-rate must be between 0 and 1');
      const members = values.members ? checkMembers(readMembers(values.members), values.members) : DEMO_MEMBERS;

      const sandbox = new Sandbox({ members, commissionBp, faults: { latencyMs, failRate } });
      const host = values.host;
      const bound = await sandbox.listen(port, host);
      const url = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host}:${bound}`;
      cli.out(`sandbox payment provider on ${url} (test members only, no real money)`);
      cli.out(`  point the gateway at it: PROVIDER_URL=${url}`);
      cli.out(
        `  commission ${commissionBp} bp (${(commissionBp / 100).toFixed(2)}%), latency ${latencyMs} ms, fail rate ${failRate}`,
      );
      cli.out('  members (card PIN, credit used / limit):');
      for (const m of sandbox.members.values())
        cli.out(
          `    ${m.name.padEnd(20)} card ${m.card}  card PIN ${m.pin.padEnd(5)} ${amount(m.used)} / ${amount(m.limit)}`,
        );
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
};

/**
 * A token revoked or changed by an operator loses its open connections on every
 * gateway sharing the Redis, not just new upgrades: switch and scanner sockets
 * are closed with 4001 token_revoked or 4003 token_changed, and connections of
 * other tokens stay up.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { keys } from '../../src/redis/keys';
import { tokenHash } from '../../src/catalog/store';
import {
  gateway,
  seedCatalog,
  soldIds,
  startHarness,
  talkProduct,
  token,
  uniq,
  type Harness,
} from '../support/harness';
import { runCliIn } from '../support/cli';
import { cdrsOf } from '../metering/fixtures';
import { until } from '../support/wait';
import { Client, Scanner, WsClient } from '../support/ws-client';
import { loadRedemptionCatalog, OTHER_VENUE, type Catalog } from '../redemption/fixtures';

let h: Harness;
let gwA: Gateway;
let gwB: Gateway;
let cat: Catalog;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  cat = await loadRedemptionCatalog(h);
  gwA = await gateway(h);
  gwB = await gateway(h);
});
afterAll(async () => {
  await gwA?.close();
  await gwB?.close();
  await h?.stop();
});

/** The connection is still served: a ping is answered. */
async function alive(c: WsClient): Promise<void> {
  const ref = uniq('p');
  c.send({ op: 'ping', ref });
  await c.arrival((m) => m.ref === ref && m.op === 'pong');
}

describe('open connections follow their token', () => {
  it('token-revoke closes the switch sockets of that token on every gateway with 4001 token_revoked; others stay up', async () => {
    const name = uniq('sw');
    const tok = await token(h, 'switch', name);
    const other = await token(h, 'switch');
    const onA = await Client.connect(gwA.port, tok);
    const onB = await Client.connect(gwB.port, tok);
    const bystander = await Client.connect(gwB.port, other);
    const [id] = await soldIds(h, talkProduct());
    const call = uniq('c');
    expect((await onB.request({ op: 'start', ref: 1, call, id, dest: '33612345678' })).op).toBe('started');

    expect(await runCliIn(h, 'token-revoke', '--name', name)).toMatchObject({ code: 0 });

    expect(await onA.closed).toEqual({ code: 4001, reason: 'token_revoked' });
    expect(await onB.closed).toEqual({ code: 4001, reason: 'token_revoked' });
    await alive(bystander);
    // A new upgrade with it is refused, on either gateway.
    await expect(Client.connect(gwB.port, tok)).rejects.toMatchObject({ status: 401 });
    await bystander.close();
  });

  it('a rotation revokes the old secret alone: its calls go on under the new one, each billed once', async () => {
    const name = uniq('sw');
    const old = await runCliIn(h, 'token-create', '--role', 'switch', '--name', name);
    const fresh = await runCliIn(h, 'token-create', '--role', 'switch', '--name', name);
    const [was, now] = [old, fresh].map((r) => JSON.parse(r.out) as { token: string; id: string });
    expect(was!.id).toMatch(/^[0-9a-f]{12}$/);
    const listed = (await runCliIn(h, 'token-list')).out.split('\n').filter((l) => l.includes(name));
    expect(listed.map((l) => (JSON.parse(l) as { id: string }).id).sort()).toEqual([was!.id, now!.id].sort());

    const c = await Client.connect(gwA.port, was!.token);
    const [id] = await soldIds(h, talkProduct());
    const call = uniq('c');
    expect((await c.request({ op: 'start', ref: 1, call, id, dest: '33612345678' })).op).toBe('started');
    expect((await c.request({ op: 'tick', ref: 2, call, sec: 3 })).op).toBe('ticked');

    expect(await runCliIn(h, 'token-revoke', '--name', name, '--id', 'ffffffffffff')).toMatchObject({ code: 1 });
    expect(await runCliIn(h, 'token-revoke', '--name', name, '--id', was!.id)).toMatchObject({
      code: 0,
      out: 'revoked 1 token(s)\n',
    });
    expect(await c.closed).toEqual({ code: 4001, reason: 'token_revoked' });
    await expect(Client.connect(gwB.port, was!.token)).rejects.toMatchObject({ status: 401 });

    // The switch comes back with the new secret: the same name, so the same call.
    const back = await Client.connect(gwB.port, now!.token);
    const stopped = await back.request({ op: 'stop', ref: 3, call, sec: 5, id, dest: '33612345678' });
    expect(stopped).toMatchObject({ op: 'stopped', call, billedSec: 5 });
    // The live call's own record: not one made up from the stop (`recovered`) beside a call left live.
    const records = await cdrsOf(h, id!, call);
    expect(records.map((r) => [r.switch, r.sec, r.cause === 'recovered'])).toEqual([[name, '5', false]]);
    await back.close();
  });

  it('a scanner socket is closed with 4003 token_changed when its venue changes, and reconnects under the new venue', async () => {
    const name = uniq('gate');
    const tok = await token(h, 'scanner', name);
    const s = await Scanner.connect(gwB.port, tok);
    const [id] = await soldIds(h, cat.wallet);
    expect((await s.validate({ id: id!, item: 'beer' })).op).toBe('valid');
    const untouched = await Scanner.connect(gwB.port, await token(h, 'scanner'));

    expect(await runCliIn(h, 'token-update', '--name', name, '--venue', OTHER_VENUE)).toMatchObject({ code: 0 });

    expect(await s.closed).toEqual({ code: 4003, reason: 'token_changed' });
    await alive(untouched);
    // Each gateway applies the change when its own catalog refresh runs. A socket opened on
    // gateway A before that authenticates with the old venue, and the refresh then closes it
    // too (4003, rightly): reconnect once A has the new venue.
    const hash = tokenHash(tok);
    await until(() => gwA.catalog.tokenByHash(hash)?.venue === OTHER_VENUE, 5000, 20, 'gateway A has the new venue');
    // The same secret now scans at the other venue: its item list prices the beer.
    const again = await Scanner.connect(gwA.port, tok);
    expect(await again.validate({ id: id!, item: 'cocktail' })).toMatchObject({ op: 'valid' });
    await again.close();
    await untouched.close();
  });

  it('a change of role closes the socket too (4003)', async () => {
    const name = uniq('sw');
    const tok = await token(h, 'switch', name);
    const c = await Client.connect(gwA.port, tok);
    expect(await runCliIn(h, 'token-update', '--name', name, '--role', 'admin')).toMatchObject({ code: 0 });
    expect(await c.closed).toEqual({ code: 4003, reason: 'token_changed' });
  });

  it('a revocation whose announcement was lost still closes the socket, by the version poll', async () => {
    const tok = await token(h, 'scanner');
    const s = await Scanner.connect(gwA.port, tok);
    // What revokeTokens does, minus the PUBLISH: as if the subscriber missed it.
    await h.r.hdel(keys.tokens, tokenHash(tok));
    await h.r.incr(keys.catalogVersion);
    expect(await s.closed).toEqual({ code: 4001, reason: 'token_revoked' });
  });
});

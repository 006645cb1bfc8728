/**
 * A charge or credit recorded twice balances on its own ID (the second record
 * took the balance too), so the per-ID conservation check cannot see it. The
 * audit counts the records per call, scan and top-up reference, and matches
 * each voucher transfer's two sides (src/ledger/doubles.ts). These tests write
 * the double straight into Redis, as a bug or an attacker with Redis access
 * would, keeping every ID's books balanced.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { audit } from '../../src/ledger/audit';
import { archiveRecords } from '../../src/ledger/retention';
import { redisTimeMs } from '../../src/redis/clock';
import { keys } from '../../src/redis/keys';
import { seedCatalog, soldIds, startHarness, talkProduct, uniq, type Harness } from '../support/harness';
import { bucketOf, hashOf, idKeyOf } from '../support/redis';

let h: Harness;
const TALK = talkProduct({ name: 'talk-dbl', face: 1_000_000, price: 1_000_000 });

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK]);
});
afterAll(async () => {
  await h?.stop();
});

/** A fresh sold ID, its books balanced (the audit reports nothing on it). */
async function freshId(): Promise<string> {
  const [id] = await soldIds(h, TALK);
  return id!;
}

/** Writes a call record taking `cost` from the ID's balance. */
async function callRecord(id: string, sw: string, call: string, cause: string, cost: number): Promise<void> {
  await h.r.xadd(
    keys.cdr(bucketOf(h, id)),
    '*',
    'switch',
    sw,
    'call',
    call,
    'id',
    hashOf(h, id),
    'cost',
    String(cost),
    'cause',
    cause,
  );
  await h.r.hincrby(idKeyOf(h, id), 'bal', -cost);
}

/** Writes a top-up record crediting `amount` to the ID's balance. */
async function topupRecord(id: string, source: string, ref: string, amount: number, note = ''): Promise<void> {
  await h.r.xadd(
    keys.sales(bucketOf(h, id)),
    '*',
    'type',
    'topup',
    'id',
    hashOf(h, id),
    'amount',
    String(amount),
    'source',
    source,
    'ref',
    ref,
    'note',
    note,
  );
  await h.r.hincrby(idKeyOf(h, id), 'bal', amount);
}

/** Writes a redemption (`redeem`) or reversal (`reverse`) record of a scan, moving the balance with it. */
async function scanRecord(id: string, type: string, scanner: string, scan: string, amount: number): Promise<void> {
  const packed = [
    type,
    scan,
    scanner,
    hashOf(h, id),
    'wallet',
    'pay',
    'v',
    'g',
    'i',
    '1',
    String(amount),
    '0',
    '0',
    '0',
    '',
  ].join('|');
  await h.r.xadd(keys.redemptions(bucketOf(h, id)), '*', 'r', packed);
  await h.r.hincrby(idKeyOf(h, id), 'bal', -amount);
}

/** The audit's problems on these IDs (by hash). */
async function problemsOf(...ids: string[]): Promise<string[]> {
  const hashes = new Set(ids.map((id) => hashOf(h, id)));
  return (await audit(h.ctx)).problems.filter((p) => hashes.has(p.id)).map((p) => p.problem);
}

describe('audit: charges and credits recorded twice', () => {
  it('reports a call with two call records, each of which took the balance', async () => {
    const id = await freshId();
    const call = uniq('c');
    await callRecord(id, 'sw-a', call, 'normal', 5_000);
    expect(await problemsOf(id)).toEqual([]);
    await callRecord(id, 'sw-a', call, 'normal', 5_000);
    expect(await problemsOf(id)).toEqual([`call sw-a/${call} billed twice: 2 call records and 0 late`]);
  });

  it('reports a second late record, and passes the reaper`s stale record with one late one', async () => {
    const id = await freshId();
    const call = uniq('c');
    await callRecord(id, 'sw-a', call, 'stale', 5_000);
    await callRecord(id, 'sw-a', call, 'late', 2_000);
    // The same call id under another token name is another call (a recovered stop).
    await callRecord(id, 'sw-b', call, 'recovered', 1_000);
    expect(await problemsOf(id)).toEqual([]);
    await callRecord(id, 'sw-a', call, 'late', 2_000);
    expect(await problemsOf(id)).toEqual([`call sw-a/${call} billed twice: 1 call records and 2 late`]);
  });

  it('reports a late record with no call record before it', async () => {
    const id = await freshId();
    const call = uniq('c');
    await callRecord(id, 'sw-a', call, 'late', -3_000); // a give-back of a charge never made
    expect(await problemsOf(id)).toEqual([`call sw-a/${call} has a late record but no call record`]);
  });

  it('reports a late record before its call record, or after a recovered one; passes one after a stop', async () => {
    const [before, recovered, stopped] = [await freshId(), await freshId(), await freshId()];
    const call = uniq('c');
    // A late stop is written only after the record that closed its call, and never of a recovered call.
    await callRecord(before, 'sw-a', call, 'late', 2_000);
    await callRecord(before, 'sw-a', call, 'stale', 5_000);
    await callRecord(recovered, 'sw-a', call, 'recovered', 5_000);
    await callRecord(recovered, 'sw-a', call, 'late', 2_000);
    // A stop under another token name closed the call live; its own switch's stop billed what it talked past it.
    await callRecord(stopped, 'sw-a', call, 'no-answer', 5_000);
    await callRecord(stopped, 'sw-a', call, 'late', 2_000);
    expect(await problemsOf(before)).toEqual([`call sw-a/${call} has a late record before its stale record`]);
    expect(await problemsOf(recovered)).toEqual([`call sw-a/${call} has a late record after its recovered record`]);
    expect(await problemsOf(stopped)).toEqual([]);
    // A call record that says no cause (damaged, or from a bug) is named as the call's record.
    const [causeless, call2] = [await freshId(), uniq('c')];
    await callRecord(causeless, 'sw-a', call2, 'late', 2_000);
    await callRecord(causeless, 'sw-a', call2, '', 5_000);
    expect(await problemsOf(causeless)).toEqual([`call sw-a/${call2} has a late record before its call record`]);
  });

  it('reports a top-up reference applied twice to one ID', async () => {
    const id = await freshId();
    await topupRecord(id, 'operator', 'ref-1', 300_000);
    await topupRecord(id, 'online', 'ref-1', 300_000); // another source's ref: another top-up
    expect(await problemsOf(id)).toEqual([]);
    await topupRecord(id, 'operator', 'ref-1', 300_000);
    expect(await problemsOf(id)).toEqual(['top-up operator:ref-1 applied 2 times']);
  });

  it('reports a scan recorded twice, and a reversal without its redemption', async () => {
    const id = await freshId();
    await scanRecord(id, 'redeem', 'sc-1', 'scan-1', 10_000);
    await scanRecord(id, 'reverse', 'sc-1', 'scan-1', -10_000);
    await scanRecord(id, 'redeem', 'sc-2', 'scan-1', 10_000); // another scanner's scan id
    expect(await problemsOf(id)).toEqual([]);
    await scanRecord(id, 'redeem', 'sc-1', 'scan-2', 10_000);
    await scanRecord(id, 'redeem', 'sc-1', 'scan-2', 10_000);
    await scanRecord(id, 'reverse', 'sc-1', 'scan-3', -10_000);
    expect(await problemsOf(id)).toEqual([
      'scan sc-1/scan-2 recorded 2 times',
      'scan sc-1/scan-3 reversed 1 times, redeemed 0',
    ]);
  });

  it('reports a voucher transfer that credited its target more than it took', async () => {
    const [voucher, target] = [await freshId(), await freshId()];
    const vh = hashOf(h, voucher);
    const transfer = async (n: number, took: number, credited: number): Promise<void> => {
      await h.r.xadd(
        keys.sales(bucketOf(h, voucher)),
        '*',
        'type',
        'voucher',
        'id',
        vh,
        'amount',
        String(took),
        'to',
        hashOf(h, target),
        'ref',
        `${vh}:${n}`,
      );
      await h.r.hincrby(idKeyOf(h, voucher), 'bal', -took);
      await topupRecord(target, 'voucher', `${vh}:${n}`, credited, vh);
    };
    await transfer(1, 200_000, 200_000);
    expect(await problemsOf(voucher, target)).toEqual([]);
    await transfer(2, 200_000, 700_000);
    expect(await problemsOf(voucher, target)).toEqual([
      `voucher transfer ${vh}:2 took 200000 but credited 700000 to ${hashOf(h, target)}`,
    ]);
  });

  // Last: the archive trims every record written so far, the other tests' too.
  it('does not report what it cannot check once the record before was trimmed', async () => {
    const [id, voucher, target] = [await freshId(), await freshId(), await freshId()];
    const vh = hashOf(h, voucher);
    const call = uniq('c');
    await callRecord(id, 'sw-a', call, 'stale', 5_000);
    await h.r.xadd(
      keys.sales(bucketOf(h, voucher)),
      '*',
      'type',
      'voucher',
      'id',
      vh,
      'amount',
      '200000',
      'to',
      hashOf(h, target),
      'ref',
      `${vh}:1`,
    );
    await h.r.hincrby(idKeyOf(h, voucher), 'bal', -200_000);
    await archiveRecords(h.ctx, join(h.dir, 'archive'), (await redisTimeMs(h.r)) + 1);
    await callRecord(id, 'sw-a', call, 'late', 2_000);
    await topupRecord(target, 'voucher', `${vh}:1`, 200_000, vh);
    expect(await problemsOf(id, voucher, target)).toEqual([]);
  });
});

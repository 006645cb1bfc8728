/**
 * What a gate or till scan answers and does, modelled from the docs alone
 * (scanners.md: product kinds, entries and re-entry, validity windows,
 * expiryDays from the first use, offline `at`, scan ids (retries,
 * scan_conflict), reversal with a ticket's latest 8 ways in and out
 * replayed, records; sales.md: refunds, top-ups;
 * operations.md: blocks, the expiry sweep, the redemption records), for
 * redemption-model.test.ts to hold the gateway against. Nothing here is
 * shared with src/redemption or lua/: a ticket's who-is-out count is replayed
 * from a plain list, and every answer is built whole, so that a field the
 * gateway adds or drops shows.
 *
 * Where the docs leave a choice open, the model accepts either answer (each
 * such place says so); where the docs said nothing, it follows the choice
 * recorded in scanners.md.
 */

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
/** How far an offline `at` may lie behind (OFFLINE_MAX_AGE_MS) or ahead of the gateway's clock (scanners.md "Offline scans"). */
const AT_BEHIND = DAY;
const AT_AHEAD = 5 * 60_000;
/** A reverse replays the ticket's latest ways in and out still standing, this many (scanners.md "Reversal"). */
const MOVES_KEPT = 8;

/** An answer as a scanner reads it (without its ref or message). */
export type Answer = Record<string, unknown>;

export type Kind = 'entry' | 'goods' | 'service' | 'talk';

/** A product's terms as the catalog states them. */
export interface ModelProduct {
  name: string;
  kind: Kind;
  /** Entries, micro-units of value, uses or talk value. */
  face: number;
  /** Venues where it is good; none: everywhere. */
  venues: string[];
  gates?: string[];
  reentry?: boolean;
  validFrom?: number;
  validUntil?: number;
  expiryDays: number;
  service?: string;
}

/** Item prices by venue, in micro-units. */
export type Prices = Record<string, Record<string, number>>;

export interface ModelScanner {
  name: string;
  venue: string;
  gate?: string;
}

/** What one redeem, validate or reverse says (ids by their index in the model). */
export interface ScanTerms {
  /** The ID; a reverse may leave it out. */
  idn?: number;
  scan: string;
  item?: string;
  qty?: number;
  dir?: 'in' | 'out';
  gate?: string;
  at?: number;
  reason?: string;
}

/** A redemption record, as `tessera export redemptions` writes it (less record, time, id). */
export interface ModelRecord {
  type: 'redeem' | 'reverse';
  scan: string;
  scanner: string;
  kind: Kind;
  action: string;
  venue: string;
  gate: string;
  item: string;
  qty: string;
  amount: string;
  before: string;
  after: string;
  reason?: string;
  at?: string;
  /** Scans that raced each other share a group: their records may come in any order. */
  race?: number;
}

/** A ticket's way in or out, as kept for a reverse to replay. */
interface Move {
  scanKey: string;
  action: 'entry' | 'reentry' | 'exit';
  qty: number;
  /** Who was out before it. */
  outBefore: number;
  kept: boolean;
}

export interface ModelId {
  n: number;
  id: string;
  p: ModelProduct;
  /** A number Tessera never minted. */
  unknown: boolean;
  sold: number | null;
  state: 'minted' | 'sold' | 'expired';
  blocked: boolean;
  refunded: boolean;
  recharged: boolean;
  bal: number;
  first: { time: number; venue: string; gate: string } | null;
  exp: number;
  /** A ticket's holders out now (who may come back in), and entries taken and not reversed. */
  out: number;
  entered: number;
  moves: Move[];
  recs: ModelRecord[];
  used: boolean;
  /** Used by exits alone: whether that is a use, the docs do not say. */
  onlyExits: boolean;
}

/** A granted scan, for its retries and its reverse. */
interface GrantedScan {
  idn: number;
  item?: string;
  qty: number;
  dir: string;
  answer: Answer;
  action: string;
  amount: number;
  venue: string;
  gate: string;
  madeAt: number;
  reversed: boolean;
  reverseAnswer?: Answer;
}

/** What the model expects: one answer, or any of `alts` where the docs allow a choice. */
export interface Expected {
  want: Answer;
  alts: Answer[];
}

const leftName = (k: Kind): string => (k === 'entry' ? 'entriesLeft' : k === 'goods' ? 'valueLeft' : 'usesLeft');
const outOfBounds = (at: number | undefined, now: number): boolean =>
  at !== undefined && (at < now - AT_BEHIND || at > now + AT_AHEAD);

export class RedemptionModel {
  readonly ids: ModelId[] = [];
  private scans = new Map<string, GrantedScan>();
  /** The race group records made now belong to (0: none). */
  race = 0;

  constructor(private readonly prices: Prices) {}

  addId(id: string, p: ModelProduct, sold: number | null, unknown = false): ModelId {
    const m: ModelId = {
      n: this.ids.length,
      id,
      p,
      unknown,
      sold,
      state: sold === null ? 'minted' : 'sold',
      blocked: false,
      refunded: false,
      recharged: false,
      bal: sold === null ? 0 : p.face,
      first: null,
      exp: 0,
      out: 0,
      entered: 0,
      moves: [],
      recs: [],
      used: false,
      onlyExits: true,
    };
    this.ids.push(m);
    return m;
  }

  /** A deep copy of the state, and a way back to it (to try the orders a race may have taken). */
  snapshot(): () => void {
    const ids = structuredClone(this.ids);
    const scans = structuredClone(this.scans);
    return () => {
      ids.forEach((b, i) => Object.assign(this.ids[i]!, b));
      this.scans = structuredClone(scans);
    };
  }

  hasScan(sc: ModelScanner, scan: string): boolean {
    return this.scans.has(`${sc.name}:${scan}`);
  }

  /** The ID a granted scan was for. */
  idOfScan(sc: ModelScanner, scan: string): number | undefined {
    return this.scans.get(`${sc.name}:${scan}`)?.idn;
  }

  redeem(sc: ModelScanner, o: ScanTerms, now: number): Expected {
    const key = `${sc.name}:${o.scan}`;
    const qty = o.qty ?? 1;
    if (this.unsafeTotal(sc, o)) return { want: { op: 'refused', scan: o.scan, reason: 'bad_value' }, alts: [] };
    const prev = this.scans.get(key);
    // A retry of a granted scan answers its first answer, whatever its `at`.
    if (!prev && outOfBounds(o.at, now))
      return { want: { op: 'refused', scan: o.scan, reason: 'bad_scan_time' }, alts: [] };
    if (prev) {
      const same = prev.idn === o.idn && prev.item === o.item && prev.qty === qty && prev.dir === (o.dir ?? 'in');
      if (!same) return { want: { op: 'refused', scan: o.scan, reason: 'scan_conflict' }, alts: [] };
      return { want: { ...prev.answer, duplicate: true, ...(prev.reversed ? { reversed: true } : {}) }, alts: [] };
    }
    const j = this.judge(sc, o, now, true);
    return { want: { ...j.want, scan: o.scan }, alts: j.alts.map((a) => ({ ...a, scan: o.scan })) };
  }

  /** A validate: what a redeem would answer now, changing nothing. */
  validate(sc: ModelScanner, o: ScanTerms, now: number): Expected {
    const j = this.judge(sc, { ...o, at: undefined }, now, false);
    return { want: j.want.op === 'redeemed' ? { ...j.want, op: 'valid' } : j.want, alts: j.alts };
  }

  reverse(sc: ModelScanner, o: ScanTerms, now: number): Expected {
    const key = `${sc.name}:${o.scan}`;
    const refused = (reason: string): Answer => ({ op: 'refused', scan: o.scan, reason });
    const ms = this.scans.get(key);
    const otherId = ms !== undefined && o.idn !== undefined && o.idn !== ms.idn;
    if (outOfBounds(o.at, now)) {
      // The docs do not say whether an unknown scan, a conflict or a bad time is answered first: either.
      if (!ms) return { want: refused('bad_scan_time'), alts: [refused('unknown_scan')] };
      if (otherId) return { want: refused('scan_conflict'), alts: [refused('bad_scan_time')] };
      if (!ms.reversed) return { want: refused('bad_scan_time'), alts: [] };
    }
    if (!ms) return { want: refused('unknown_scan'), alts: [] };
    if (otherId) return { want: refused('scan_conflict'), alts: [] };
    if (ms.reversed) return { want: { ...ms.reverseAnswer!, duplicate: true }, alts: [] };
    const m = this.ids[ms.idn]!;
    const k = m.p.kind;
    const back = ms.action === 'exit' || ms.action === 'reentry' ? 0 : ms.amount;
    const before = m.bal;
    m.bal += back;
    ms.reversed = true;
    if (ms.action === 'entry') m.entered -= ms.qty;
    if (k === 'entry') this.replay(m, key);
    const ans: Answer = {
      op: 'reversed',
      scan: o.scan,
      kind: k,
      action: 'reverse',
      amount: back,
      [leftName(k)]: m.bal,
    };
    ms.reverseAnswer = ans;
    m.recs.push({
      type: 'reverse',
      scan: o.scan,
      scanner: sc.name,
      kind: k,
      action: ms.action,
      venue: ms.venue,
      gate: ms.gate,
      item: ms.item ?? '',
      qty: String(ms.qty),
      amount: String(-back),
      before: String(before),
      after: String(m.bal),
      reason: o.reason ?? '',
      // A reverse is dated no earlier than the scan it undoes.
      ...(o.at !== undefined ? { at: String(Math.max(o.at, ms.madeAt)) } : {}),
      ...(this.race ? { race: this.race } : {}),
    });
    return { want: ans, alts: [] };
  }

  /** What a refund is refused for ('' when it is granted, 'duplicate' when it was already). */
  refund(idn: number): { want: string; alts: string[] } {
    const m = this.ids[idn]!;
    const want = m.refunded
      ? 'duplicate'
      : m.recharged
        ? 'recharged'
        : m.state === 'minted'
          ? 'not_sold'
          : m.used || m.bal < m.p.face || m.state === 'expired'
            ? 'already_used'
            : '';
    // Whether an exit alone is a use, the docs do not say: either.
    return { want, alts: m.used && m.onlyExits ? ['', 'already_used'] : [] };
  }

  refunded(idn: number): void {
    const m = this.ids[idn]!;
    m.refunded = true;
    m.blocked = true;
    m.bal = 0;
  }

  block(idn: number, blocked: boolean): void {
    const m = this.ids[idn]!;
    // A refunded ID stays blocked (sales.md).
    if (blocked || !m.refunded) m.blocked = blocked;
  }

  /** What a top-up is refused for ('' when it is credited): talk time alone, sold, neither blocked nor refunded (sales.md). */
  topup(idn: number, amount: number): { want: string; alts: string[] } {
    const m = this.ids[idn]!;
    if (m.p.kind !== 'talk') return { want: 'wrong_kind', alts: [] };
    if (m.state === 'minted') return { want: 'not_active', alts: [] };
    // A refunded ID is blocked too: which the docs answer first, they do not say.
    if (m.refunded) return { want: 'refunded', alts: ['blocked'] };
    if (m.blocked) return { want: 'blocked', alts: [] };
    m.bal += amount;
    m.recharged = true;
    return { want: '', alts: [] };
  }

  /**
   * The expiry sweep at `now`: what is left past the expiry and the offline grace after it
   * (OFFLINE_MAX_AGE_MS, 24 h) is forfeited; talk time is not the sweep's (operations.md "Expiry and breakage").
   */
  sweep(now: number): void {
    for (const m of this.ids)
      if (
        !m.unknown &&
        !m.blocked &&
        m.state !== 'minted' &&
        m.exp &&
        m.exp < now - DAY &&
        m.bal > 0 &&
        m.p.kind !== 'talk'
      ) {
        m.bal = 0;
        m.state = 'expired';
      }
  }

  /** An item's total past 2^53: refused before anything else is read. */
  private unsafeTotal(sc: ModelScanner, o: ScanTerms): boolean {
    const price = o.item === undefined ? undefined : this.prices[sc.venue]?.[o.item];
    return price !== undefined && !Number.isSafeInteger(price * (o.qty ?? 1));
  }

  /** The instant a scan is judged at: its `at`, never after now nor before the sale. */
  private judgedAt(m: ModelId, at: number | undefined, now: number): number {
    if (at === undefined) return now;
    const t = Math.min(at, now);
    return m.sold !== null && t < m.sold ? m.sold : t;
  }

  /** What a redeem answers; when `apply`, a granted one is applied and kept. */
  private judge(sc: ModelScanner, o: ScanTerms, now: number, apply: boolean): Expected {
    const m = this.ids[o.idn!]!;
    const k = m.p.kind;
    const qty = o.qty ?? 1;
    const dir = o.dir ?? 'in';
    const alts: Answer[] = [];
    const refuse = (reason: string, extra: Answer = {}): Expected => ({
      want: { op: 'refused', reason, ...extra },
      alts,
    });
    if (this.unsafeTotal(sc, o)) return refuse('bad_value');
    if (m.unknown) return refuse('unknown_id');
    if (k !== 'talk' && m.p.venues.length && !m.p.venues.includes(sc.venue)) return refuse('wrong_venue');
    if (k === 'talk') return refuse('wrong_kind');
    if (m.blocked) return refuse('blocked');
    if (m.state === 'minted') return refuse('not_active');
    const t = this.judgedAt(m, o.at, now);
    const gate = sc.gate ?? o.gate ?? '';
    // validUntil's own millisecond is still valid; at the expiry's own millisecond the docs are
    // unclear, and the model follows the gateway (expired).
    const past =
      m.state === 'expired' || (m.p.validUntil !== undefined && t > m.p.validUntil) || (m.exp > 0 && t >= m.exp);
    if (past) {
      // An exit past validity lets out whoever is inside; anything else is refused expired.
      if (!(k === 'entry' && dir === 'out' && qty <= m.entered - m.out)) {
        if (k === 'entry' && dir === 'out') {
          // The docs judge expiry first; the code judges a till's item and the gate first. Either.
          if (o.item !== undefined) alts.push({ op: 'refused', reason: 'wrong_kind' });
          else if (m.p.gates?.length && !m.p.gates.includes(gate)) alts.push({ op: 'refused', reason: 'wrong_gate' });
        }
        return refuse('expired');
      }
    } else if (m.p.validFrom !== undefined && t < m.p.validFrom)
      return refuse('not_yet_valid', { validFrom: m.p.validFrom });
    if (dir === 'out' && k !== 'entry') return refuse('wrong_kind');
    const item = o.item;
    const grant = (action: string, amount: number, after: number, move: () => void): Expected => {
      const want: Answer = {
        op: 'redeemed',
        kind: k,
        action,
        amount,
        [leftName(k)]: after,
        ...(item !== undefined ? { item } : {}),
      };
      if (!apply) return { want, alts };
      const before = m.bal;
      move();
      m.bal = after;
      m.used = true;
      if (action !== 'exit') m.onlyExits = false;
      // The first use is the earliest granted scan in (an offline one may predate it); expiry counts from it.
      if (action !== 'exit' && (!m.first || t < m.first.time)) {
        const had = m.first;
        m.first = { time: t, venue: sc.venue, gate };
        if (m.p.expiryDays > 0) m.exp = had ? Math.min(m.exp, t + m.p.expiryDays * DAY) : t + m.p.expiryDays * DAY;
      }
      m.recs.push({
        type: 'redeem',
        scan: o.scan,
        scanner: sc.name,
        kind: k,
        action,
        venue: sc.venue,
        gate,
        item: item ?? '',
        qty: String(qty),
        amount: String(amount),
        before: String(before),
        after: String(after),
        ...(o.at !== undefined ? { at: String(o.at) } : {}),
        ...(this.race ? { race: this.race } : {}),
      });
      this.scans.set(`${sc.name}:${o.scan}`, {
        idn: m.n,
        item,
        qty,
        dir,
        answer: { ...want, scan: o.scan },
        action,
        amount,
        venue: sc.venue,
        gate,
        madeAt: o.at ?? now,
        reversed: false,
      });
      return { want, alts };
    };
    const moved = (action: Move['action']): void => this.move(m, `${sc.name}:${o.scan}`, action, qty);
    if (k === 'entry') {
      if (item !== undefined) return refuse('wrong_kind');
      if (m.p.gates?.length && !m.p.gates.includes(gate)) return refuse('wrong_gate');
      // An exit never lets out more than are inside (a reversed entry beyond the latest 8 may leave fewer).
      if (dir === 'out') return grant('exit', 0, m.bal, () => moved('exit'));
      if (m.p.reentry && m.out > 0) {
        if (qty > m.out) return refuse('insufficient_value', { valueLeft: m.out });
        return grant('reentry', 0, m.bal, () => moved('reentry'));
      }
      if (m.bal === 0) return refuse('already_redeemed', { firstUsed: m.first });
      if (qty > m.bal) return refuse('insufficient_value', { valueLeft: m.bal });
      return grant('entry', qty, m.bal - qty, () => moved('entry'));
    }
    if (k === 'goods') {
      const price = item === undefined ? undefined : this.prices[sc.venue]?.[item];
      if (price === undefined) return refuse('unknown_item');
      if (price * qty > m.bal) return refuse('insufficient_value', { valueLeft: m.bal });
      return grant('spend', price * qty, m.bal - price * qty, () => {});
    }
    // At a gate a service ID without its service's name is no ticket: nothing is used.
    if (item === undefined && gate !== '') return refuse('wrong_kind');
    if (item !== undefined && item !== m.p.service) return refuse('unknown_item');
    if (m.bal === 0) return refuse('already_redeemed', { firstUsed: m.first });
    if (qty > m.bal) return refuse('insufficient_value', { valueLeft: m.bal });
    return grant('use', qty, m.bal - qty, () => {});
  }

  /** A ticket's way in or out: counted, and kept among the latest 8 for a reverse to replay. */
  private move(m: ModelId, scanKey: string, action: Move['action'], qty: number): void {
    m.moves.push({ scanKey, action, qty, outBefore: m.out, kept: true });
    const kept = m.moves.filter((x) => x.kept);
    for (const x of kept.slice(0, Math.max(0, kept.length - MOVES_KEPT))) x.kept = false;
    if (action === 'exit') m.out = Math.min(m.out + qty, m.entered);
    else if (action === 'reentry') m.out -= qty;
    else {
      m.entered += qty;
      // Without re-entry, whoever went out is gone for good.
      if (!m.p.reentry) m.out = 0;
    }
  }

  /**
   * A ticket's who-is-out count after a reverse: the latest 8 ways in and out still standing
   * replayed from the count the reversed one found, as if it had never been made; one no
   * longer kept moves nobody.
   */
  private replay(m: ModelId, key: string): void {
    const kept = m.moves.filter((x) => x.kept);
    const k = kept.findIndex((x) => x.scanKey === key);
    const target = m.moves.find((x) => x.scanKey === key);
    if (target) target.kept = false;
    if (k < 0) {
      m.out = Math.min(m.out, m.entered);
      return;
    }
    const rest = kept.filter((_, j) => j !== k).slice(k);
    let out = kept[k]!.outBefore;
    let later = rest.filter((x) => x.action === 'entry').reduce((a, x) => a + x.qty, 0);
    for (const x of rest) {
      x.outBefore = out;
      if (x.action === 'entry') {
        later -= x.qty;
        if (!m.p.reentry) out = 0;
      } else if (x.action === 'reentry') out = Math.max(0, out - x.qty);
      else out = Math.min(out + x.qty, m.entered - later);
    }
    m.out = Math.min(out, m.entered);
  }
}

import { createHash } from 'node:crypto';
import type { Product, TalkProduct } from './schema';

/**
 * A product's terms as field/value pairs: what its IDs are sold under. They are
 * kept once per product version and bucket (`ts:{bN}:pt:<version>`, written by
 * lua/mint.lua), and each ID names its version (`pt`), instead of a copy in
 * every ID; a version never changes (it is a digest of the terms), so an ID
 * keeps the terms it was sold under whatever the catalog says later. Only rates
 * are read live.
 * `face` is the value an ID starts with once sold: micro-units for talk and goods,
 * entries for tickets, uses for services. Redemptions subtract from it alike,
 * so value sold = balance + records holds for every kind.
 */
export function productTerms(p: Product): (string | number)[] {
  // A recharge voucher has no validity of its own: it is used once, whole.
  const common = ['kind', p.kind, 'cur', p.currency, 'expd', p.kind === 'recharge' ? 0 : p.expiryDays];
  switch (p.kind) {
    case 'talk': {
      // Highest first: the order in which one tick crossing several must announce them.
      const thresholds = [...new Set(p.thresholds)].sort((a, b) => b - a).join(',');
      return [...common, 'face', p.face, 'plan', p.plan, 'thr', thresholds, 'maxc', p.maxCalls, 'cc', creditTerms(p)];
    }
    case 'entry':
      return [
        ...common,
        'face',
        p.entries,
        'venues',
        p.venues.join(','),
        'gates',
        p.gates.join(','),
        'from',
        Number(p.validFrom ?? 0),
        'until',
        Number(p.validUntil ?? 0),
        'reent',
        p.reentry ? 1 : 0,
      ];
    case 'goods':
      return [...common, 'face', p.face, 'venues', p.venues.join(',')];
    case 'service':
      return [...common, 'face', p.uses, 'svc', p.service, 'venues', p.venues.join(',')];
    case 'recharge':
      return [...common, 'face', p.face, 'into', p.into.join(',')];
  }
}

/**
 * Every field productTerms can give: an ID's own hash never holds them, but
 * for IDs minted before the terms moved out (lua/includes/id_fields.lua keeps
 * the same list).
 */
export const TERM_FIELDS: ReadonlySet<string> = new Set([
  'kind',
  'cur',
  'expd',
  'face',
  'plan',
  'thr',
  'maxc',
  'cc',
  'venues',
  'gates',
  'from',
  'until',
  'reent',
  'svc',
  'into',
]);

/** A version of a product's terms: a digest of them, so equal terms share one version and changed ones get another. */
export function termsVersion(terms: readonly (string | number)[]): string {
  return createHash('sha256')
    .update(JSON.stringify(terms.map(String)))
    .digest('base64url')
    .slice(0, 12);
}

/**
 * A talk product's credit-control terms packed into one ID-hash field, as
 * lua/includes/terms.lua reads them: "grant|final action|on failure:seconds|validity".
 */
export function creditTerms(p: TalkProduct): string {
  const grant = p.grantSec ?? (p.maxCalls <= 1 ? 0 : 60);
  const final = p.finalAction === 'redirect' ? `redirect:${p.redirectTo ?? ''}` : 'terminate';
  const onFailure = p.onFailure ?? 'terminate';
  const failSec = onFailure === 'continue' ? (p.failureSec ?? 0) : 0;
  return `${grant}|${final}|${onFailure}:${failSec}|${p.quotaValiditySec ?? 600}`;
}

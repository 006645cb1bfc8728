import type { Product, TalkProduct } from './schema';

/**
 * The product terms copied onto each ID at mint, as ID-hash field/value pairs.
 * An ID keeps the terms it was sold under; only rates are read live.
 * `face` is the value an ID starts with once sold: micro-units for talk and goods,
 * entries for tickets, uses for services. Redemptions subtract from it alike,
 * so value sold = balance + records holds for every kind.
 */
export function productTerms(p: Product): (string | number)[] {
  // A recharge voucher has no validity of its own: it is used once, whole.
  const common = ['prod', p.name, 'kind', p.kind, 'cur', p.currency, 'expd', p.kind === 'recharge' ? 0 : p.expiryDays];
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
        'inside',
        0,
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

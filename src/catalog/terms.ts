import type { Product } from './schema';

/**
 * The product terms copied onto each ID at mint, as ID-hash field/value pairs.
 * An ID keeps the terms it was sold under; only rates are read live.
 * `face` is the value an ID starts with once sold: micro-units for talk and goods.
 */
export function productTerms(p: Product): (string | number)[] {
  const common = ['prod', p.name, 'kind', p.kind, 'cur', p.currency, 'face', p.face, 'expd', p.expiryDays];
  // Highest first: the order in which one tick crossing several must announce them.
  const thresholds = [...new Set(p.thresholds)].sort((a, b) => b - a).join(',');
  return [...common, 'plan', p.plan, 'thr', thresholds, 'maxc', p.maxCalls];
}

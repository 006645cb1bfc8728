/** Seeded randomness for the model-based tests: the same draws for a seed on every machine (xorshift32). */
export function random(seed: number) {
  let s = seed >>> 0 || 1;
  const next = (): number => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
  const int = (a: number, b: number): number => a + Math.floor(next() * (b - a + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  /** Spread evenly over orders of magnitude, from a to b. */
  const log = (a: number, b: number): number =>
    Math.floor(Math.exp(Math.log(a) + next() * (Math.log(b) - Math.log(a))));
  const chance = (p: number): boolean => next() < p;
  return { next, int, pick, log, chance };
}
export type Random = ReturnType<typeof random>;

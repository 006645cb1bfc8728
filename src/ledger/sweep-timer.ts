/**
 * When a sweep over every ID runs on a gateway: every `everyMs`, the first a minute after start
 * (sooner when the interval is shorter), so restarts never starve it. Neither timer keeps the
 * process alive.
 */
const FIRST_SWEEP_MS = 60_000;

export class SweepTimer {
  private first?: NodeJS.Timeout;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly everyMs: number,
    private readonly sweep: () => Promise<unknown>,
  ) {}

  start(): void {
    this.first = setTimeout(() => void this.sweep(), Math.min(this.everyMs, FIRST_SWEEP_MS));
    this.first.unref();
    this.timer = setInterval(() => void this.sweep(), this.everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.first) clearTimeout(this.first);
    if (this.timer) clearInterval(this.timer);
  }
}

/**
 * A stand-in for a gateway worker of `--workers`, forked by a test (node --import tsx): one counter,
 * `tessera_test_events_total`, served through src/observability/worker-metrics.ts as a worker's are.
 * Told `{ t: 'test:count', by }` it counts; told `{ t: 'test:scrape' }` it scrapes as a worker's
 * /metrics does and sends back `{ t: 'test:scraped', text }` (or `error`).
 */
import { Counter, Registry } from 'prom-client';
import { workerScrape } from '../../src/observability/worker-metrics';

const registry = new Registry();
const events = new Counter({ name: 'tessera_test_events_total', help: 'test events', registers: [registry] });
const scrape = workerScrape(registry);

process.on('message', (m: { t?: string; by?: number }) => {
  if (m.t === 'test:count') {
    events.inc(m.by ?? 1);
    process.send?.({ t: 'test:counted' });
  } else if (m.t === 'test:scrape') {
    scrape().then(
      (text) => process.send?.({ t: 'test:scraped', text }),
      (err: unknown) => process.send?.({ t: 'test:scraped', error: String(err) }),
    );
  }
});
process.send?.({ t: 'test:ready' });
// The test's IPC channel keeps it alive; when the test is gone, so is it.
process.on('disconnect', () => process.exit(0));

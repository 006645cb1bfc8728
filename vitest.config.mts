import { defineConfig } from 'vitest/config';

// At the repository's root so that `npx vitest run test/…/x.test.ts` gets the suite's settings
// (30 s timeouts, two files at a time) as `npm test` does, not vitest's defaults.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Each file starts its own redis-server; two cores, so two files at a time.
    maxWorkers: 2,
    pool: 'forks',
  },
});

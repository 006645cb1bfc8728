// The module boundaries of src/, checked by `npm run lint` (depcruise src test bench).
// Layers, bottom up: protocol, config, observability, ids (leaves) < redis < ledger < the
// domains metering, redemption, sales, hooks (webhooks) < gateway, cli, main.ts; dev/ is the sandbox card company.
// Tests and bench may import anything; type-only imports count like any other.
const DOMAINS = '(metering|redemption|sales|hooks)';
const ANYWHERE_OUTSIDE_SRC = '^(test|bench)/';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Modules import each other in a ring. Move what both need into a lower module, or pass it in.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'leaves-import-no-src',
      severity: 'error',
      comment:
        'src/protocol, src/config, src/observability and src/ids are leaves: they import nothing else from src/ ' +
        '(only their own folder and packages).',
      from: { path: '^src/(protocol|config|observability|ids)/' },
      to: { path: '^src/', pathNot: '^src/$1/' },
    },
    {
      name: 'redis-imports-config-observability',
      severity: 'error',
      comment: 'src/redis may import only src/config and src/observability from the rest of src/.',
      from: { path: '^src/redis/' },
      to: { path: '^src/', pathNot: '^src/(redis|config|observability)/' },
    },
    {
      name: 'ledger-below-domains',
      severity: 'error',
      comment:
        'src/ledger sits below the domains: it never imports src/metering, src/redemption, src/sales, src/hooks, ' +
        'src/gateway, src/cli or src/dev. Move the shared piece down into ledger (or lower), or pass it in.',
      from: { path: '^src/ledger/' },
      to: { path: `^src/(${DOMAINS.slice(1, -1)}|gateway|cli|dev)/` },
    },
    {
      name: 'domains-independent',
      severity: 'error',
      comment:
        'A domain (src/metering, src/redemption, src/sales, src/hooks) never imports another domain, src/gateway or src/cli. ' +
        'What two domains share belongs in src/ledger or lower; the wiring belongs in src/gateway or src/cli.',
      from: { path: `^src/${DOMAINS}/` },
      to: { path: `^src/(${DOMAINS.slice(1, -1)}|gateway|cli)/`, pathNot: '^src/$1/' },
    },
    {
      name: 'only-entry-points-import-domains',
      severity: 'error',
      comment:
        'Only src/gateway, src/cli and src/main.ts import the domains (src/metering, src/redemption, src/sales, src/hooks).',
      from: {
        pathNot: [`^src/(gateway|cli|${DOMAINS.slice(1, -1)})/`, '^src/main\\.ts$', ANYWHERE_OUTSIDE_SRC],
      },
      to: { path: `^src/${DOMAINS}/` },
    },
    {
      name: 'gateway-private',
      severity: 'error',
      comment: 'Modules under src/gateway are imported only from src/gateway itself and src/main.ts.',
      from: { pathNot: ['^src/gateway/', '^src/main\\.ts$', ANYWHERE_OUTSIDE_SRC] },
      to: { path: '^src/gateway/' },
    },
    {
      name: 'dev-only-from-main-cli',
      severity: 'error',
      comment: 'src/dev (the sandbox card company) is imported only by src/main.ts and src/cli.',
      from: { pathNot: ['^src/dev/', '^src/main\\.ts$', '^src/cli/', ANYWHERE_OUTSIDE_SRC] },
      to: { path: '^src/dev/' },
    },
    {
      name: 'kamailio-connector-is-a-switch',
      severity: 'error',
      comment:
        'src/kamailio (the Kamailio connector) talks to Tessera over the switch protocol only: it imports ' +
        'src/protocol, src/config and src/observability, never a domain, the ledger, Redis or the gateway.',
      from: { path: '^src/kamailio/' },
      to: { path: '^src/', pathNot: '^src/(kamailio|protocol|config|observability)/' },
    },
    {
      name: 'src-not-to-test-or-bench',
      severity: 'error',
      comment: 'src/ is built alone into dist/: it never imports from test/ or bench/.',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.check.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};

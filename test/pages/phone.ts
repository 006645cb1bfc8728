/**
 * Debian's Chromium driven by playwright-core, as a phone with JavaScript
 * switched off: the buyer's pages must work as plain HTML forms.
 * (`npx playwright install` cannot download a browser here; Debian's can be installed.)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

/** Debian's Chromium, the browser the pages are tested in. */
export const CHROMIUM = '/usr/bin/chromium';

/** A phone: what the pages must be readable on. */
export const PHONE = { width: 390, height: 844 };

/**
 * Launch flags for this machine: no sandbox (root), no GPU, and nothing that
 * phones home (the closed network refuses it, many connections at a time).
 * Playwright itself gives every launch a fresh, empty --user-data-dir.
 */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Makes sure Debian's chromium is there, installing it the way `npm test` does
 * (deploy/ensure-deps.sh) when it is missing. Answers why not when it cannot be had.
 */
export function ensureChromium(): { ok: true } | { ok: false; why: string } {
  if (existsSync(CHROMIUM)) return { ok: true };
  const script = resolve(__dirname, '../../deploy/ensure-deps.sh');
  const r = spawnSync('sh', [script, 'chromium'], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 10 * 60_000 });
  if (existsSync(CHROMIUM)) return { ok: true };
  return {
    ok: false,
    why: `${CHROMIUM} is missing and \`sh deploy/ensure-deps.sh chromium\` could not install it (exit ${r.status ?? r.error?.message ?? r.signal})`,
  };
}

export interface Phone {
  browser: Browser;
  context: BrowserContext;
  page: Page;
  /** Where the screenshots go, one per page seen. */
  shots: string;
  close(): Promise<void>;
}

export async function launchPhone(): Promise<Phone> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
  const context = await browser.newContext({
    javaScriptEnabled: false,
    viewport: PHONE,
    screen: PHONE,
    isMobile: true,
    hasTouch: true,
    deviceScaleFactor: 2,
  });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const shots = process.env.TESSERA_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), 'tessera-pages-'));
  return {
    browser,
    context,
    page,
    shots,
    async close() {
      await context.close().catch(() => undefined);
      await browser.close();
    },
  };
}

/**
 * Taps an element that leads to another page (a submit button, a link), the
 * way a person does with no script on the page, and waits until the page the
 * server answered with is shown. Returns that answer's HTTP status.
 */
async function navigateBy(page: Page, selector: string, method?: string): Promise<number> {
  const response = page.waitForResponse(
    (r) =>
      r.request().isNavigationRequest() &&
      r.frame() === page.mainFrame() &&
      (!method || r.request().method() === method),
  );
  // The answer arrives before the new page replaces the old one: wait for that too.
  const committed = page.waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame() });
  await page.tap(selector);
  const [r] = await Promise.all([response, committed]);
  await page.waitForLoadState('load');
  return r.status();
}

/** Submits the page's form by tapping its button; the status of the page the server answers with. */
export function submit(page: Page, button = 'button[type=submit]'): Promise<number> {
  return navigateBy(page, button, 'POST');
}

/** Follows a link by tapping it; the status of the page it leads to. */
export function follow(page: Page, link: string): Promise<number> {
  return navigateBy(page, link);
}

export interface Layout {
  viewportMeta: string | null;
  scrollWidth: number;
  innerWidth: number;
  /** <script> elements on the page: the buyer's pages have none. */
  scripts: number;
  /** Elements sticking out past the right edge of the screen (tag#id.class), if any. */
  overflowing: string[];
  /** Smallest font size of visible text, in CSS px. */
  smallestFontPx: number;
  /** Buttons, inputs and links that stand alone (not inside a sentence) under 24 CSS px high: too small to tap. */
  tinyTargets: string[];
}

/**
 * Measures the page as it lies on the phone. page.evaluate is Playwright's own
 * evaluation (DevTools protocol): it runs even though the page's own scripts
 * are switched off (scriptsAreOff checks both).
 */
export function layout(page: Page): Promise<Layout> {
  // A string, not a function: the project compiles without the DOM library.
  return page.evaluate<Layout>(`(() => {
    const w = window.innerWidth;
    const name = (e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '');
    const all = [...document.body.querySelectorAll('*')];
    const overflowing = all.filter((e) => e.getBoundingClientRect().right > w + 0.5).map(name);
    let smallest = Infinity;
    for (const e of all) {
      const hasText = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      const r = e.getBoundingClientRect();
      if (hasText && r.width > 0 && r.height > 0) smallest = Math.min(smallest, parseFloat(getComputedStyle(e).fontSize));
    }
    const tinyTargets = [...document.querySelectorAll('button, input:not([type=hidden]), select, nav a, li > a')]
      .filter((e) => e.getBoundingClientRect().height < 24)
      .map(name);
    return {
      viewportMeta: document.querySelector('meta[name=viewport]')?.getAttribute('content') ?? null,
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: w,
      scripts: document.scripts.length,
      overflowing,
      smallestFontPx: smallest,
      tinyTargets,
    };
  })()`);
}

/**
 * Proves the context is what the tests claim: a page's own script does not
 * run, while Playwright's evaluation (used for the measurements) does.
 */
export async function scriptsAreOff(page: Page): Promise<boolean> {
  await page.setContent('<!doctype html><title>before</title><script>document.title = "script ran"</script><p>x</p>');
  return (await page.evaluate('document.title')) === 'before';
}

/** Visible text of the page, whitespace collapsed. */
export async function text(page: Page): Promise<string> {
  return (await page.innerText('body')).replace(/\s+/g, ' ');
}

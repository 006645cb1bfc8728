/**
 * The buyer's pages: buy, result, check (ID + PIN shows the ID again) and
 * access numbers. Plain forms, no JavaScript; every failure is a page that
 * says what happened and what to do. The markup is in pages/views.ts.
 *
 * Every page forbids scripts, inline style, framing and caching
 * (PAGE_HEADERS). A form that changes state (buy, check) is accepted only
 * with the form token of the page that showed it: a keyed hash of a random
 * value the browser keeps in a SameSite=Lax cookie, so another site can
 * neither have that cookie sent with its post nor forge the token.
 */
import { decodedSegment, pathParam, replyFor } from '../http';
import type { Router } from '../router';
import { buyRoutes } from './pages/buy';
import { checkRoutes } from './pages/check';
import { STYLE } from './pages/html';
import { pageKit, redirect, type PageDeps, type PageKit } from './pages/kit';
import { areaPage, areasPage, unknownAreaPage } from './pages/views';

export { PAGE_HEADERS, type PageDeps } from './pages/kit';

export function pageRoutes(router: Router, d: PageDeps): void {
  const kit = pageKit(d);
  // A page whose handler failed is answered with a page too.
  const app: Router = {
    get: (pattern, handler) => router.get(pattern, handler, kit.failed),
    post: (pattern, handler) => router.post(pattern, handler, kit.failed),
  };
  staticRoutes(app);
  buyRoutes(app, d, kit);
  checkRoutes(app, d, kit);
  accessRoutes(app, d, kit);
}

/** `/` leads to the buy page; the one stylesheet every page uses. */
function staticRoutes(app: Router): void {
  app.get('/', (res) => {
    redirect(replyFor(res), 302, '/buy');
  });

  app.get('/pages.css', (res) => {
    replyFor(res).send(200, STYLE, 'text/css; charset=utf-8', {
      'X-Content-Type-Options': 'nosniff',
      'Cache-Control': 'public, max-age=3600',
    });
  });
}

/** The access numbers: every area, and one area's numbers. */
function accessRoutes(app: Router, d: PageDeps, kit: PageKit): void {
  app.get('/access', (res) => {
    kit.send(replyFor(res), 200, 'Access numbers', areasPage(d.catalog.areas));
  });

  app.get('/access/:area', (res, req) => {
    const reply = replyFor(res);
    const a = d.catalog.area(pathParam(req, 0));
    if (!a) return kit.send(reply, { reason: 'unknown_area' }, 'Access numbers', unknownAreaPage());
    kit.send(reply, 200, a.name, areaPage(a));
  });

  // An address with a slash added (typed, or by a messenger) leads to its area, or to the list; any
  // other address under /access/ is an unknown area: a page with the way back, never the API's JSON 404.
  app.get('/access/*', (res, req) => {
    const reply = replyFor(res);
    const rest = req.getUrl().slice('/access/'.length);
    const cut = rest.indexOf('/');
    const to = (path: string): void => redirect(reply, 302, path);
    if (rest === '') return to('/access');
    const a = cut === rest.length - 1 ? d.catalog.area(decodedSegment(rest.slice(0, cut))) : undefined;
    if (a) return to(`/access/${encodeURIComponent(a.area)}`);
    kit.send(reply, { reason: 'unknown_area' }, 'Access numbers', unknownAreaPage());
  });
}

import escapeHtml from 'escape-html';

/**
 * Server-rendered pages: plain HTML that works without JavaScript and reads
 * well on a phone. `html` escapes every interpolated value unless it is already
 * markup made by `html` itself.
 */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

type Part = Html | string | number | undefined | null | false | Html[];

export function html(strings: TemplateStringsArray, ...values: Part[]): Html {
  let out = strings[0]!;
  values.forEach((v, i) => {
    out += render(v) + strings[i + 1]!;
  });
  return new Html(out);
}

function render(v: Part): string {
  if (v === undefined || v === null || v === false) return '';
  if (v instanceof Html) return v.text;
  if (Array.isArray(v)) return v.map(render).join('');
  return escapeHtml(String(v));
}

/** The pages' one style sheet, served as /pages.css: the pages' Content-Security-Policy allows no inline style. */
export const STYLE = `body { font: 17px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 34rem; padding: 1rem; color: #1b1b1b; overflow-wrap: break-word; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; } label { display: block; margin: .8rem 0 .2rem; font-weight: 600; }
input, select, button { font: inherit; width: 100%; box-sizing: border-box; padding: .6rem; }
button { margin-top: 1rem; background: #1d4ed8; color: #fff; border: 0; border-radius: .3rem; }
.id { font: 700 1.6rem/1.2 ui-monospace, monospace; letter-spacing: .08em; word-break: break-all; }
.error { background: #fee2e2; padding: .6rem; border-radius: .3rem; } .ok { background: #dcfce7; padding: .6rem; border-radius: .3rem; }
table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: .3rem; border-bottom: 1px solid #ddd; }
.url { overflow-wrap: anywhere; word-break: break-all; }
li > a { display: inline-block; padding: .3rem 0; }
nav { margin-bottom: 1rem; } nav a { display: inline-block; padding: .5rem 0; margin-right: 1rem; }
`;

export function page(title: string, body: Html): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Tessera</title>
<link rel="stylesheet" href="/pages.css">
</head>
<body>
<nav><a href="/buy">Buy</a><a href="/access">Access numbers</a></nav>
${body}
</body>
</html>`.text;
}

/**
 * Micro-units to a decimal amount for people, exact: 10000000 EUR -> "10.00 EUR", 998333 ->
 * "0.998333 EUR". Rounded to the cent, a balance left by per-minute prices showed more than it holds.
 */
export function money(micro: number, currency: string): string {
  const fraction = String(micro % 1_000_000)
    .padStart(6, '0')
    .replace(/0+$/, '')
    .padEnd(2, '0');
  return `${Math.floor(micro / 1_000_000)}.${fraction} ${currency}`;
}

export function duration(sec: number): string {
  const h = Math.floor(sec / 3600);
  const m = Math.floor((sec % 3600) / 60);
  return h > 0 ? `${h} h ${m} min` : `${m} min`;
}

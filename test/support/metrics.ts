/** The gateway's Prometheus text: fetched, parsed, one sample looked up. */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** GET /metrics of a gateway. */
export async function metricsText(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

/** Parses Prometheus text into samples; throws on a line that is not one. */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the sample with this name and exactly these labels (none: the unlabelled one). */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).sort();
  const hit = parseMetrics(text).find((s) => {
    if (s.name !== name) return false;
    const have = Object.entries(s.labels).sort();
    return have.length === want.length && have.every(([k, v], i) => want[i]![0] === k && want[i]![1] === v);
  });
  return hit?.value;
}

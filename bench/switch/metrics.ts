/** What the gateway's own /metrics says about bench:switch's run: tick outcomes, errors, call_tick batching. */

export interface GatewayMetrics {
  tickOutcomes: Record<string, number>;
  errorOutcomes: Record<string, number>;
  tickScriptCalls: number;
  tickScriptAvgMs: number;
  ticksPerScript: number;
}

function parseMetrics(text: string): GatewayMetrics {
  const tickOutcomes: Record<string, number> = {};
  const errorOutcomes: Record<string, number> = {};
  let calls = 0;
  let sum = 0;
  for (const line of text.split('\n')) {
    let m = /^tessera_events_total\{op="([^"]+)",outcome="([^"]+)"\} (\S+)/.exec(line);
    if (m) {
      const v = Number(m[3]);
      if (m[1] === 'tick') tickOutcomes[m[2]!] = v;
      if (m[2] !== 'ok' && !(m[1] === 'tick' && m[2] === 'dup')) errorOutcomes[`${m[1]}:${m[2]}`] = v;
      continue;
    }
    m = /^tessera_script_duration_seconds_(count|sum)\{script="call_tick"\} (\S+)/.exec(line);
    if (m) {
      if (m[1] === 'count') calls = Number(m[2]);
      else sum = Number(m[2]);
    }
  }
  const ticks = Object.values(tickOutcomes).reduce((a, b) => a + b, 0);
  return {
    tickOutcomes,
    errorOutcomes,
    tickScriptCalls: calls,
    tickScriptAvgMs: calls ? Math.round((sum / calls) * 1e6) / 1000 : 0,
    ticksPerScript: calls ? Math.round((ticks / calls) * 100) / 100 : 0,
  };
}

/** The gateway's figures, or why they could not be read. */
export async function scrapeMetrics(port: number): Promise<GatewayMetrics | string> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(15_000) });
    if (res.status !== 200) return `HTTP ${res.status}`;
    return parseMetrics(await res.text());
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** bench:switch's ceiling reads the gateway's FCALL from MONITOR lines on a socket of its own. */
import { describe, expect, it } from 'vitest';
import { monitorArgs } from '../../bench/switch/ceiling';

describe('monitorArgs', () => {
  it('reads every quoted argument of a MONITOR line, in order', () => {
    const line = '+1796619473.848145 [0 127.0.0.1:5555] "FCALL" "call_tick_ab12" "2" "ts:{b7}:live" "0" "1"';
    expect(monitorArgs(line)).toEqual(['FCALL', 'call_tick_ab12', '2', 'ts:{b7}:live', '0', '1']);
  });

  it('undoes Redis escapes: quotes, backslashes, control characters and \\x bytes', () => {
    const line = String.raw`+1.0 [0 lua] "SET" "a\"b" "c\\d" "e\nf" "\x00\xff"`;
    expect(monitorArgs(line)).toEqual(['SET', 'a"b', 'c\\d', 'e\nf', '\x00\xff']);
  });

  it('has no arguments in the +OK that starts monitoring', () => {
    expect(monitorArgs('+OK')).toEqual([]);
  });
});

/** Luhn check digit over a string of decimal digits (ISO/IEC 7812). */
export function luhnDigit(body: string): number {
  let sum = 0;
  // Walking right to left, the digit next to the (future) check digit is doubled first.
  for (let i = body.length - 1, dbl = true; i >= 0; i--, dbl = !dbl) {
    let d = body.charCodeAt(i) - 48;
    if (dbl) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return (10 - (sum % 10)) % 10;
}

export function luhnValid(id: string): boolean {
  return luhnDigit(id.slice(0, -1)) === id.charCodeAt(id.length - 1) - 48;
}

// Request bodies: JSON.parse, refusing what it would silently accept. A repeated key would let the last one win
// unseen (a proxy or a log reading the first would disagree with what was ranked); "__proto__" is refused as a key.

/** A body that is not one JSON document the API accepts; the message is the reason given to the client. */
export class JsonBodyError extends Error {
  readonly statusCode = 400;
  readonly code = 'invalid JSON';
}

export function parseJsonBody(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new JsonBodyError(text.trim() === '' ? 'empty body' : (err as Error).message);
  }
  if (typeof value !== 'object' || value === null) return value;
  const keys = parsedKeys(value);
  // A repeated key leaves more names in the text than in the parsed value. Counting each '":' is the cheap test;
  // when it cannot decide (a space before a colon, a string value starting with ':'), every string is scanned.
  if ((quoteColons(text) === keys && !SPACED_COLON.test(text)) || keysInText(text) === keys) return value;
  throw new JsonBodyError(`duplicate key ${JSON.stringify(firstDuplicate(text))}: an object names each key once`);
}

const SPACED_COLON = /"[ \t\n\r]+:/;

/** '":' with the quote unescaped: every key written without a space before its colon, and nothing fewer. */
function quoteColons(text: string): number {
  let n = 0;
  for (let i = text.indexOf('":'); i !== -1; i = text.indexOf('":', i + 2)) {
    let slashes = 0;
    while (text.charCodeAt(i - 1 - slashes) === 92) slashes++;
    if (slashes % 2 === 0) n++;
  }
  return n;
}

/** Every object's key count, summed (repeated keys count once: JSON.parse keeps the last); throws on "__proto__". */
function parsedKeys(root: object): number {
  let n = 0;
  // Iterative: a body nested deeper than the call stack is still just a refusal.
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v !== 'object' || v === null) continue;
    if (Array.isArray(v)) {
      for (const x of v) if (typeof x === 'object' && x !== null) stack.push(x);
      continue;
    }
    for (const k in v) {
      if (k === '__proto__') throw new JsonBodyError('"__proto__" is not an accepted key');
      n++;
      const x = (v as Record<string, unknown>)[k];
      if (typeof x === 'object' && x !== null) stack.push(x);
    }
  }
  return n;
}

/** The end of the string token that opens at `open` (a '"'): the index of its closing quote. */
function stringEnd(text: string, open: number): number {
  let close = text.indexOf('"', open + 1);
  for (;;) {
    let slashes = 0;
    while (text.charCodeAt(close - 1 - slashes) === 92) slashes++;
    if (slashes % 2 === 0) return close;
    close = text.indexOf('"', close + 1);
  }
}

/** Whether the next non-space character after `i` is ':' (the string before it is a key). */
function colonFollows(text: string, i: number): boolean {
  let c = text.charCodeAt(i);
  while (c === 32 || c === 10 || c === 13 || c === 9) c = text.charCodeAt(++i);
  return c === 58;
}

/** Member names in valid JSON text: strings followed by ':' (outside strings JSON has no quotes). */
function keysInText(text: string): number {
  let n = 0;
  for (let open = text.indexOf('"'); open !== -1; ) {
    const close = stringEnd(text, open);
    if (colonFollows(text, close + 1)) n++;
    open = text.indexOf('"', close + 1);
  }
  return n;
}

/** The first key named twice in one object (only on the refusal path: walks the text character by character). */
function firstDuplicate(text: string): string {
  const objects: (Set<string> | null)[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '{') objects.push(new Set());
    else if (c === '[') objects.push(null);
    else if (c === '}' || c === ']') objects.pop();
    else if (c === '"') {
      const close = stringEnd(text, i);
      const keys = objects.at(-1);
      if (keys && colonFollows(text, close + 1)) {
        const key = JSON.parse(text.slice(i, close + 1)) as string;
        if (keys.has(key)) return key;
        keys.add(key);
      }
      i = close;
    }
  }
  return '';
}

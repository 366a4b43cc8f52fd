// fast-check arbitraries from the JSON Schema subset an OpenAPI 3.0 document of ours uses: values the schema allows
// (`allowed`) and values it refuses (`refused`, each with what was broken). Anything outside the subset throws, so a
// schema that grows a keyword the generator does not know fails loudly instead of being fuzzed wrongly.
import fc from 'fast-check';

export interface Schema {
  type?: 'object' | 'array' | 'string' | 'number' | 'integer' | 'boolean';
  nullable?: boolean;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean;
  items?: Schema;
  minItems?: number;
  maxItems?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  description?: string;
}

const KNOWN = new Set([
  'type',
  'nullable',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'minItems',
  'maxItems',
  'minLength',
  'maxLength',
  'pattern',
  'minimum',
  'maximum',
  'description',
]);

function check(schema: Schema, path: string): void {
  for (const k of Object.keys(schema)) if (!KNOWN.has(k)) throw new Error(`${path}: keyword "${k}" not supported`);
  if (schema.type === 'object' && schema.additionalProperties !== false)
    throw new Error(`${path}: only objects with additionalProperties: false are supported`);
}

/** A refused value and what makes it so (reported by fast-check with a failing case). */
export interface Refused {
  value: unknown;
  broken: string;
}

/** Real values to mix in for properties of a name (e.g. ids the store knows): each must be allowed by its schema. */
export type Examples = Record<string, readonly unknown[]>;

/** Characters strings are drawn from: mostly plain, with the ones that trip parsers and counters. */
const char = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 1, arbitrary: fc.constantFrom('😀', '"', '\\', '\u2028', '\u0000', '|', ':', '{', '}', 'é', '\ud800') },
);

/** `^[...]*$`, the one pattern shape supported: per character, whether it is allowed. */
function charRule(pattern: string | undefined, path: string): ((c: string) => boolean) | undefined {
  if (pattern === undefined) return undefined;
  const m = /^\^(\[[^\]]+\])\*\$$/.exec(pattern);
  if (!m) throw new Error(`${path}: pattern ${pattern} not supported (only ^[...]*$)`);
  const one = new RegExp(`^${m[1]}$`, 'u');
  return (c) => one.test(c);
}

function allowedString(schema: Schema, path: string): fc.Arbitrary<string> {
  const ok = charRule(schema.pattern, path);
  const minLength = schema.minLength ?? 0;
  const maxLength = schema.maxLength ?? minLength + 64;
  const unit = ok ? char.filter(ok) : char;
  return fc.oneof(
    fc.string({ unit, minLength, maxLength }),
    // The longest allowed, which a short-biased generator would rarely reach.
    fc.string({ unit, minLength: maxLength, maxLength }),
  );
}

function refusedString(schema: Schema, path: string): fc.Arbitrary<Refused>[] {
  const out: fc.Arbitrary<Refused>[] = [];
  const ok = charRule(schema.pattern, path);
  const valid = allowedString(schema, path);
  if ((schema.minLength ?? 0) > 0)
    out.push(
      fc
        .string({ unit: char, maxLength: (schema.minLength as number) - 1 })
        .map((value) => ({ value, broken: `${path}: shorter than ${schema.minLength}` })),
    );
  if (schema.maxLength !== undefined) {
    const over = schema.maxLength + 1;
    out.push(
      fc
        .string({ unit: ok ? char.filter(ok) : char, minLength: over, maxLength: over + 8 })
        .map((value) => ({ value, broken: `${path}: longer than ${schema.maxLength}` })),
    );
  }
  if (ok)
    out.push(
      fc
        .tuple(
          valid,
          char.filter((c) => !ok(c)),
          fc.nat(),
        )
        .map(([s, bad, at]) => {
          // Still within maxLength, so the pattern alone is what refuses it.
          const cps = [...s].slice(0, Math.max(0, (schema.maxLength ?? Number.POSITIVE_INFINITY) - 1));
          cps.splice(at % (cps.length + 1), 0, bad);
          return { value: cps.join(''), broken: `${path}: ${JSON.stringify(bad)} not in ${schema.pattern}` };
        }),
    );
  return out;
}

function allowedNumber(schema: Schema): fc.Arbitrary<number> {
  const min = schema.minimum ?? -Number.MAX_VALUE;
  const max = schema.maximum ?? Number.MAX_VALUE;
  if (schema.type === 'integer')
    return fc.oneof(
      fc.bigInt({ min: BigInt(Math.ceil(min)), max: BigInt(Math.floor(max)) }).map(Number),
      fc.constantFrom(Math.ceil(min), Math.floor(max)),
    );
  return fc.oneof(
    fc.double({ min, max, noNaN: true }),
    fc.integer({ min: Math.max(min, -1e6), max: Math.min(max, 1e6) }),
    fc.constantFrom(min, max),
  );
}

function refusedNumber(schema: Schema, path: string): fc.Arbitrary<Refused>[] {
  const out: fc.Arbitrary<Refused>[] = [];
  // Finite only: JSON has no Infinity (JSON.stringify would send null).
  if (schema.minimum !== undefined && schema.minimum > -Number.MAX_VALUE)
    out.push(
      fc
        .double({ min: -Number.MAX_VALUE, max: schema.minimum, maxExcluded: true, noNaN: true })
        .filter((v) => v < (schema.minimum as number) && !(schema.type === 'integer' && !Number.isInteger(v)))
        .map((value) => ({ value, broken: `${path}: below ${schema.minimum}` })),
    );
  if (schema.maximum !== undefined && schema.maximum < Number.MAX_VALUE)
    out.push(
      fc
        .oneof(
          fc.double({ min: schema.maximum, max: Number.MAX_VALUE, minExcluded: true, noNaN: true }),
          fc.constantFrom(2 ** 53 + 2, 1e308),
        )
        .filter((v) => v > (schema.maximum as number))
        .map((value) => ({ value, broken: `${path}: above ${schema.maximum}` })),
    );
  if (schema.type === 'integer')
    out.push(
      allowedNumber(schema)
        .map((v) => v + 0.5)
        .filter((v) => !Number.isInteger(v))
        .map((value) => ({ value, broken: `${path}: not an integer` })),
    );
  return out;
}

/** Values of another JSON type than the schema's (null only when not nullable). */
function wrongType(schema: Schema, path: string): fc.Arbitrary<Refused> {
  const kinds: fc.Arbitrary<unknown>[] = [];
  if (schema.type !== 'string') kinds.push(fc.string({ maxLength: 8 }));
  if (schema.type !== 'number' && schema.type !== 'integer')
    kinds.push(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }));
  if (schema.type !== 'boolean') kinds.push(fc.boolean());
  if (schema.type !== 'array') kinds.push(fc.constant([]), fc.array(fc.integer(), { maxLength: 3 }));
  if (schema.type !== 'object') kinds.push(fc.constant({}));
  if (!schema.nullable) kinds.push(fc.constant(null));
  return fc.oneof(...kinds).map((value) => ({ value, broken: `${path}: not a ${schema.type}` }));
}

/** Values `schema` allows. */
export function allowed(schema: Schema, examples: Examples = {}, path = '$'): fc.Arbitrary<unknown> {
  check(schema, path);
  let base: fc.Arbitrary<unknown>;
  switch (schema.type) {
    case 'object': {
      const props = schema.properties ?? {};
      const model: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [k, s] of Object.entries(props)) {
        const generated = allowed(s, examples, `${path}.${k}`);
        const known = examples[k];
        model[k] = known?.length ? fc.oneof(generated, fc.constantFrom(...known)) : generated;
      }
      base = fc.record(model, { requiredKeys: (schema.required ?? []) as never[] });
      break;
    }
    case 'array':
      base = fc.array(allowed(schema.items as Schema, examples, `${path}[]`), {
        minLength: schema.minItems ?? 0,
        maxLength: schema.maxItems ?? (schema.minItems ?? 0) + 8,
      });
      break;
    case 'string':
      base = allowedString(schema, path);
      break;
    case 'number':
    case 'integer':
      base = allowedNumber(schema);
      break;
    case 'boolean':
      base = fc.boolean();
      break;
    default:
      throw new Error(`${path}: type ${schema.type} not supported`);
  }
  return schema.nullable ? fc.oneof({ weight: 1, arbitrary: fc.constant(null) }, { weight: 4, arbitrary: base }) : base;
}

/** Values `schema` refuses, each with what breaks it: exactly one thing, at any depth. */
export function refused(schema: Schema, examples: Examples = {}, path = '$'): fc.Arbitrary<Refused> {
  check(schema, path);
  const out: fc.Arbitrary<Refused>[] = [wrongType(schema, path)];
  switch (schema.type) {
    case 'object': {
      const props = schema.properties ?? {};
      const whole = allowed(schema, examples, path) as fc.Arbitrary<Record<string, unknown>>;
      for (const k of schema.required ?? [])
        out.push(
          whole.map((o) => {
            const { [k]: _, ...rest } = o;
            return { value: rest, broken: `${path}: without ${k}` };
          }),
        );
      out.push(
        fc
          .tuple(whole, fc.string({ minLength: 1, maxLength: 12 }), fc.jsonValue({ maxDepth: 2 }))
          .filter(([, k]) => !Object.hasOwn(props, k))
          .map(([o, k, v]) => ({ value: { ...o, [k]: v }, broken: `${path}: unknown key ${JSON.stringify(k)}` })),
      );
      for (const [k, s] of Object.entries(props))
        out.push(
          fc
            .tuple(whole, refused(s, examples, `${path}.${k}`))
            .map(([o, bad]) => ({ value: { ...o, [k]: bad.value }, broken: bad.broken })),
        );
      break;
    }
    case 'array': {
      const items = schema.items as Schema;
      const min = schema.minItems ?? 0;
      const max = schema.maxItems;
      const item = allowed(items, examples, `${path}[]`);
      if (min > 0)
        out.push(
          fc
            .array(item, { maxLength: min - 1 })
            .map((value) => ({ value, broken: `${path}: fewer than ${min} items` })),
        );
      if (max !== undefined)
        out.push(
          fc
            .array(item, { minLength: max + 1, maxLength: max + 3 })
            .map((value) => ({ value, broken: `${path}: more than ${max} items` })),
        );
      out.push(
        fc
          .tuple(
            fc.array(item, { minLength: Math.max(min, 1), maxLength: max ?? min + 4 }),
            refused(items, examples, `${path}[]`),
            fc.nat(),
          )
          .map(([list, bad, at]) => {
            const value = [...list];
            value[at % value.length] = bad.value;
            return { value, broken: bad.broken };
          }),
      );
      break;
    }
    case 'string':
      out.push(...refusedString(schema, path));
      break;
    case 'number':
    case 'integer':
      out.push(...refusedNumber(schema, path));
      break;
  }
  return fc.oneof(...out);
}

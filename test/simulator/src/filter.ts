import type { MachineRecord } from './types';

// The `$filter` subset MDE documents for /api/machines: `<field> <op> <literal>` clauses joined by
// `and`/`or` (no parentheses), ops eq/ne/gt/ge/lt/le, literals 'quoted strings', bare ISO dates
// (`2018-08-01Z`), numbers and null. Enum and string equality is case-insensitive like the service.

export const FILTERABLE_FIELDS = new Set([
  'computerDnsName',
  'id',
  'version',
  'deviceValue',
  'aadDeviceId',
  'machineTags',
  'lastSeen',
  'exposureLevel',
  'onboardingStatus',
  'lastIpAddress',
  'healthStatus',
  'osPlatform',
  'riskScore',
  'rbacGroupId',
]);

type Op = 'eq' | 'ne' | 'gt' | 'ge' | 'lt' | 'le';
type Literal = string | number | null;
interface Clause {
  field: string;
  op: Op;
  value: Literal;
  isDate: boolean;
}
export type Predicate = (record: MachineRecord) => boolean;

export class FilterError extends Error {}

const CLAUSE =
  /^\s*([A-Za-z]+)\s+(eq|ne|gt|ge|lt|le)\s+('(?:[^']|'')*'|null|-?\d+(?:\.\d+)?(?![\d:TZ-])|\d{4}-\d{2}-\d{2}(?:T[0-9:.]+)?Z?)\s*/i;

function parseClause(text: string): { clause: Clause; rest: string } {
  const match = CLAUSE.exec(text);
  if (!match) throw new FilterError(`Invalid filter clause near '${text.slice(0, 40)}'`);
  const [all, field, opRaw, literal] = match as unknown as [string, string, string, string];
  if (!FILTERABLE_FIELDS.has(field))
    throw new FilterError(`The property '${field}' cannot be used in the $filter query option.`);
  let value: Literal;
  let isDate = false;
  if (literal.startsWith("'")) value = literal.slice(1, -1).replace(/''/g, "'");
  else if (literal.toLowerCase() === 'null') value = null;
  else if (/^\d{4}-\d{2}-\d{2}/.test(literal)) {
    const ms = Date.parse(
      literal.endsWith('Z') && literal.length === 11 ? `${literal.slice(0, 10)}T00:00:00Z` : literal,
    );
    if (Number.isNaN(ms)) throw new FilterError(`Invalid date literal '${literal}'`);
    value = ms;
    isDate = true;
  } else value = Number(literal);
  return { clause: { field, op: opRaw.toLowerCase() as Op, value, isDate }, rest: text.slice(all.length) };
}

function compare(actual: unknown, clause: Clause): boolean {
  const { op, value } = clause;
  if (clause.field === 'machineTags' && Array.isArray(actual)) {
    const hit = actual.some((t) => String(t).toLowerCase() === String(value).toLowerCase());
    return op === 'ne' ? !hit : hit;
  }
  if (value === null || actual === null || actual === undefined) {
    const same = (actual ?? null) === value;
    if (op === 'eq') return same;
    if (op === 'ne') return !same;
    return false;
  }
  let a: string | number;
  let b: string | number;
  if (clause.isDate || clause.field === 'lastSeen') {
    a = Date.parse(String(actual));
    b = typeof value === 'number' ? value : Date.parse(value);
  } else if (typeof value === 'number') {
    a = Number(actual);
    b = value;
  } else {
    a = String(actual).toLowerCase();
    b = value.toLowerCase();
  }
  switch (op) {
    case 'eq':
      return a === b;
    case 'ne':
      return a !== b;
    case 'gt':
      return a > b;
    case 'ge':
      return a >= b;
    case 'lt':
      return a < b;
    case 'le':
      return a <= b;
  }
}

/** Compiles a `$filter` expression; throws FilterError with an OData-style message when unsupported. */
export function compileFilter(expression: string): Predicate {
  let rest = expression;
  const groups: Clause[][] = [[]];
  for (;;) {
    const parsed = parseClause(rest);
    (groups[groups.length - 1] as Clause[]).push(parsed.clause);
    rest = parsed.rest;
    if (rest.trim() === '') break;
    const joiner = /^(and|or)\s+/i.exec(rest);
    if (!joiner) throw new FilterError(`Syntax error near '${rest.slice(0, 40)}'`);
    if ((joiner[1] as string).toLowerCase() === 'or') groups.push([]);
    rest = rest.slice(joiner[0].length);
  }
  // `and` binds tighter than `or`, as in OData.
  return (record) => groups.some((clauses) => clauses.every((c) => compare(record[c.field], c)));
}

// Pagination for every list route. A list is ordered by a key that is unique per item (a tuple such
// as [createdAt, id]); a page is the `limit` items after the `cursor`, which is the last key of the
// page before, opaque to clients (base64url of JSON). Keyset pages, unlike offsets, never show an
// item twice or skip one when items are added or removed between pages: an item added behind the
// cursor is simply not on a later page.
//
// The answer stays the plain JSON array it always was (old clients keep working); when there is
// more, the `Paddock-Next-Cursor` header carries the cursor of the next page and `Link` its URL
// (rel="next"). The client library follows them (client/http.ts getAll).
import type Koa from 'koa';
import { Op, type Model, type ModelStatic, type WhereOptions } from 'sequelize';
import { plainRows } from './db/index.js';
import { DomainError } from './domain-error.js';

export type KeyPart = string | number;
export type Key = KeyPart[];

export const defaultPageSize = 100;
export const maxPageSize = 1000;

export interface Page {
  limit: number;
  /** The key of the last item already seen, if this is not the first page. */
  after?: Key;
}

/** What list routes document for their query (merged into each route's own). */
export const pageQuery = {
  limit: `items per page, 1 to ${maxPageSize} (default ${defaultPageSize})`,
  cursor: 'from the Paddock-Next-Cursor header of the page before',
};

/** The page a request asks for; `invalid_request` for a bad limit or a cursor this list did not make. */
export function pageOf(ctx: Koa.Context, keyLength: number): Page {
  const limitText = ctx.query.limit;
  let limit = defaultPageSize;
  if (limitText !== undefined) {
    limit = Number(limitText);
    if (typeof limitText !== 'string' || !/^\d{1,4}$/.test(limitText) || limit < 1 || limit > maxPageSize) {
      throw new DomainError('invalid_request', `limit is a whole number from 1 to ${maxPageSize}`, { max: maxPageSize });
    }
  }
  const cursor = ctx.query.cursor;
  if (cursor === undefined) return { limit };
  let after: unknown;
  try {
    if (typeof cursor !== 'string' || cursor.length > 2000) throw new Error('not one string');
    after = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    after = undefined;
  }
  const valid =
    Array.isArray(after) &&
    after.length === keyLength &&
    after.every((part) => typeof part === 'string' || (typeof part === 'number' && Number.isFinite(part)));
  if (!valid) throw new DomainError('invalid_request', 'not a cursor of this list: pass the Paddock-Next-Cursor of the page before, unchanged');
  return { limit, after: after as Key };
}

/** Compares keys part by part (numbers as numbers, strings by code unit). */
export function compareKeys(a: Key, b: Key): number {
  for (let index = 0; index < a.length; index++) {
    const x = a[index];
    const y = b[index];
    if (x === y) continue;
    return x < y ? -1 : 1;
  }
  return 0;
}

/**
 * One page of a list held in memory. `items` must be sorted by `key` (ascending, or descending
 * with `descending`); the start is found by binary search, so a page costs O(log n + limit).
 */
export function slicePage<T>(items: readonly T[], key: (item: T) => Key, page: Page, descending = false): { items: T[]; next?: Key } {
  let start = 0;
  if (page.after) {
    const after = page.after;
    const beyond = (item: T) => (descending ? compareKeys(key(item), after) < 0 : compareKeys(key(item), after) > 0);
    let high = items.length;
    while (start < high) {
      const middle = (start + high) >>> 1;
      if (beyond(items[middle])) high = middle;
      else start = middle + 1;
    }
  }
  const slice = items.slice(start, start + page.limit);
  const more = start + page.limit < items.length;
  return more ? { items: slice, next: key(slice[slice.length - 1]) } : { items: slice };
}

/**
 * A Sequelize `where` for the rows after `page.after` in the order of `columns` (all ascending, or
 * all descending): (a > x) or (a = x and b > y) …; fetch `limit + 1` rows and give them to
 * `rowsPage` to learn whether there is a next page.
 */
export function afterWhere(columns: string[], page: Page, descending = false): WhereOptions {
  if (!page.after) return {};
  const after = page.after;
  const beyond = descending ? Op.lt : Op.gt;
  return {
    [Op.or]: columns.map((column, index) => ({
      ...Object.fromEntries(columns.slice(0, index).map((earlier, at) => [earlier, columnValue(earlier, after[at])])),
      [column]: { [beyond]: columnValue(column, after[index]) },
    })),
  };
}

/** Key parts for date columns travel as milliseconds; the database compares Dates. */
const columnValue = (column: string, value: KeyPart) => (column.endsWith('At') && typeof value === 'number' ? new Date(value) : value);

/** The page from `limit + 1` rows fetched in key order. */
export function rowsPage<T>(rows: T[], key: (row: T) => Key, page: Page): { items: T[]; next?: Key } {
  if (rows.length <= page.limit) return { items: rows };
  const items = rows.slice(0, page.limit);
  return { items, next: key(items[items.length - 1]) };
}

/**
 * One page of the rows of `model` that match `where`, newest first: keys [createdAt ms, id], both
 * descending, so rows made in the same millisecond keep one order across pages.
 */
export async function newestFirst<Row extends { createdAt: Date; id: string }>(
  model: ModelStatic<Model<Row>>,
  where: WhereOptions<Row>,
  page: Page,
): Promise<{ items: Row[]; next?: Key }> {
  const rows = plainRows(
    await model.findAll({
      where: { ...where, ...afterWhere(['createdAt', 'id'], page, true) },
      order: [
        ['createdAt', 'DESC'],
        ['id', 'DESC'],
      ],
      limit: page.limit + 1,
      raw: true,
    }),
  );
  return rowsPage(rows, (row) => [new Date(row.createdAt).getTime(), row.id], page);
}

/** Answers with the page's items, and the next page's cursor in headers when there is one. */
export function sendPage<T>(ctx: Koa.Context, result: { items: T[]; next?: Key }): void {
  ctx.body = result.items;
  if (!result.next) return;
  const cursor = Buffer.from(JSON.stringify(result.next)).toString('base64url');
  ctx.set('Paddock-Next-Cursor', cursor);
  const query = new URLSearchParams(ctx.querystring);
  query.set('cursor', cursor);
  ctx.set('Link', `<${ctx.path}?${query.toString()}>; rel="next"`);
}

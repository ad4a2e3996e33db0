// Reads a JSON request body with a size limit, and validates it against the route's schema.
import type Koa from 'koa';
import type { z } from 'zod';
import { ApiError } from './errors.js';

export const maxBodyBytes = 1024 * 1024;

/** The raw request body, refused (413) past `limit` bytes without reading more than that. */
export async function readRaw(ctx: Koa.Context, limit = maxBodyBytes): Promise<Buffer> {
  const length = Number(ctx.get('content-length') || 0);
  if (length > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw tooLarge(limit);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

export async function readJson(ctx: Koa.Context): Promise<unknown> {
  const text = (await readRaw(ctx)).toString('utf8');
  if (text.trim() === '') return {};
  const type = ctx.get('content-type');
  if (type && !/^application\/(.+\+)?json\b/i.test(type)) {
    throw new ApiError(415, 'unsupported_media_type', `send JSON (Content-Type: application/json), not ${type.split(';')[0]}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ApiError(400, 'invalid_json', `the body is not valid JSON: ${(error as Error).message}`);
  }
}

export async function readBody<T extends z.ZodType>(ctx: Koa.Context, schema: T, what: string): Promise<z.infer<T>> {
  const parsed = schema.safeParse(await readJson(ctx));
  if (!parsed.success) throw validationError(parsed.error, what);
  return parsed.data;
}

function tooLarge(limit: number): ApiError {
  return new ApiError(413, 'payload_too_large', `the body is larger than ${limit} bytes`, { limit });
}

/** Turns zod's issues into the details of a 400 `invalid_request`. */
export function validationError(error: z.ZodError, what: string): ApiError {
  const issues = error.issues.map((issue) => ({ path: issue.path.map(String).join('.'), message: issue.message }));
  const first = issues[0];
  return new ApiError(400, 'invalid_request', `invalid ${what}: ${first.path ? `${first.path}: ` : ''}${first.message}`, { issues });
}

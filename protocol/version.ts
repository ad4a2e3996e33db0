// Paddock's version: the API says it on /healthz and in its OpenAPI document, and a lab-host agent
// sends it with its claims so the API can tell an agent older than itself.
export const version = '0.1.0';

/** Whether version `a` is older than `b` (dotted numbers; a part that is not a number counts as 0). */
export function olderThan(a: string, b: string): boolean {
  const parts = (text: string) =>
    text
      .split(/[.+-]/)
      .slice(0, 3)
      .map((part) => (/^\d+$/.test(part) ? Number(part) : 0));
  const [left, right] = [parts(a), parts(b)];
  for (let index = 0; index < 3; index++) {
    if ((left[index] ?? 0) !== (right[index] ?? 0)) return (left[index] ?? 0) < (right[index] ?? 0);
  }
  return false;
}

// The JSON Query API, called with the seller key kept in sessionStorage.

const KEY = "stockcdc.key";
const OWNER = "stockcdc.owner";

export class ApiError extends Error {
  constructor(status, error, detail) {
    super(detail || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
  }
}

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  get owner() { return sessionStorage.getItem(OWNER); },
  save(key, owner) { sessionStorage.setItem(KEY, key); sessionStorage.setItem(OWNER, owner); },
  clear() { sessionStorage.removeItem(KEY); sessionStorage.removeItem(OWNER); },
};

/** GET a path of the API with query parameters; throws ApiError on an error answer. */
export async function get(path, params = {}, key = session.key) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const response = await fetch(url, { headers: { Authorization: `Bearer ${key}` } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.error, body.detail);
  return body;
}

/** Every item of a keyset-paginated list (follows next_cursor), at most `max` items. */
export async function all(path, params = {}, max = 20_000) {
  const items = [];
  let cursor = null;
  do {
    const page = await get(path, { ...params, limit: 1000, cursor });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

export const enc = encodeURIComponent;

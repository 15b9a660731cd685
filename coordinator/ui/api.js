// The admin API as the dashboard uses it: the bearer token from sessionStorage on
// every call, and problem+json answers turned into errors a person can read.

const TOKEN_KEY = "settle.token";
// /ui/assets/api.js -> the coordinator's root, so the page also works behind a path prefix.
const ROOT = new URL("../../", import.meta.url);

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An answer that was not 2xx, with what the server said about it. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }

  /** The text to show: title and detail, and what to do about auth failures. */
  describe() {
    const { title, detail, code } = this.problem;
    const head = [title, detail].filter(Boolean).join(": ") || `HTTP ${this.status}`;
    if (this.status === 401) {
      return `${head}. Enter an API token in the field at the top (a reader token to look, an operator token to act).`;
    }
    if (this.status === 403) {
      return `${head}. This token's role may not do this; use a token with the operator role for actions.`;
    }
    return code ? `${head} (${code})` : head;
  }
}

async function call(method, path, query, body) {
  const url = new URL(path, ROOT);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, { title: "The coordinator did not answer", detail: String(e.message || e) });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, data && typeof data === "object" ? data : { title: response.statusText, detail: text.slice(0, 200) });
  }
  return data;
}

export const listTransactions = (filters) => call("GET", "v1/admin/transactions", filters);
export const transaction = (id) => call("GET", `v1/admin/transactions/${encodeURIComponent(id)}`);
export const definitionVersion = (name, version) =>
  call("GET", `v1/saga-definitions/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}`);
export const act = (id, action, body) =>
  call("POST", `v1/admin/transactions/${encodeURIComponent(id)}/${encodeURIComponent(action)}`, undefined, body);

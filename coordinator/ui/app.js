// The operator dashboard: home (counts and the stuck list), the filtered list, and one
// transaction with its step graph, timeline and actions. Views follow the URL fragment
// (#/, #/list?…, #/tx/ID); every value from the API reaches the page as text, never HTML.

import * as api from "./api.js";
import { stepGraph } from "./graph.js";

const IN_FLIGHT = ["running", "compensating", "active", "preparing", "committing", "aborting"];
const FINISHED = ["completed", "compensated", "committed", "aborted", "resolved"];
const STATES = ["stuck", ...IN_FLIGHT, ...FINISHED];
/** States nothing changes by itself: the detail view stops refreshing there. */
const AT_REST = new Set(["stuck", ...FINISHED]);
const REFRESH_MS = 1000;
const HOME_REFRESH_MS = 10000;

const ACTIONS = {
  retry: "Call the failed step or compensation again now, with a fresh retry budget (the backoff is reset).",
  pause: "Stop automatic retries of this transaction until it is resumed.",
  resume: "Let automatic retries of this paused transaction continue.",
  compensate: "Roll back: completed saga steps are compensated, an active 2PC transaction is aborted.",
  skip: "Mark one step done with the output you give, for a participant that was fixed by hand.",
  resolve: "Mark this stuck transaction resolved by hand; the coordinator will not call anyone for it again.",
};

const view = document.getElementById("view");
const notice = document.getElementById("notice");
let generation = 0; // a view's timers stop once another view has been drawn

// ---- small DOM helpers -------------------------------------------------------

function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Replaces the view; absent parts (null, false) are left out. */
function show(...parts) {
  view.replaceChildren(...parts.filter((p) => p !== null && p !== undefined && p !== false));
}

function badge(state) {
  return h("span", { class: `badge state-${state}` }, state);
}

function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return h("time", { datetime: iso, title: iso }, `${d.toISOString().slice(0, 19).replace("T", " ")}Z (${relative(d)})`);
}

function relative(d) {
  const s = Math.round((d.getTime() - Date.now()) / 1000);
  const a = Math.abs(s);
  if (a < 5) return "just now";
  const text = a < 60 ? `${a}s` : a < 3600 ? `${Math.round(a / 60)}m` : a < 86400 ? `${Math.round(a / 3600)}h` : `${Math.round(a / 86400)}d`;
  return s >= 0 ? `in ${text}` : `${text} ago`;
}

function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

function table(headers, rows, props) {
  return h(
    "table",
    props,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows),
  );
}

function showNotice(text, kind = "error") {
  notice.textContent = text;
  notice.className = `notice ${kind}`;
  notice.hidden = !text;
}

function describe(e) {
  return e instanceof api.ApiError ? e.describe() : String(e && e.message ? e.message : e);
}

function txLink(id) {
  return h("a", { href: `#/tx/${id}`, class: "mono" }, id);
}

function definitionOf(t) {
  return t.definition ? `${t.definition} v${t.version ?? "?"}` : t.kind === "twopc" ? "2PC" : "—";
}

// ---- home --------------------------------------------------------------------

function countCards(counts, current) {
  const present = STATES.filter((s) => s === "stuck" || (counts[s] || 0) > 0);
  const extra = Object.keys(counts).filter((s) => !STATES.includes(s));
  return h(
    "div",
    { class: "counts", id: "counts" },
    [...present, ...extra].map((s) =>
      h(
        "a",
        {
          class: `count state-${s}${s === "stuck" ? " prominent" : ""}${current === s ? " current" : ""}`,
          href: `#/list?state=${s}`,
          "data-state": s,
        },
        h("span", { class: "n" }, counts[s] || 0),
        h("span", { class: "label" }, s),
      ),
    ),
  );
}

function summaryRows(items) {
  return items.map((t) =>
    h(
      "tr",
      { "data-id": t.id },
      h("td", { class: "nowrap" }, txLink(t.id)),
      h("td", {}, t.kind),
      h("td", {}, definitionOf(t)),
      h("td", {}, badge(t.state)),
      h("td", { class: "reason" }, t.reason || ""),
      h("td", { class: "nowrap" }, time(t.created_at)),
      h("td", { class: "nowrap" }, time(t.updated_at)),
      h("td", { class: "nowrap" }, time(t.next_attempt_at)),
    ),
  );
}

function needs(n) {
  return n === 1 ? "1 needs" : `${n} need`;
}

const SUMMARY_HEADERS = ["id", "kind", "definition", "state", "reason", "created", "updated", "next attempt"];

async function home(gen) {
  const page = await api.listTransactions({ state: "stuck", limit: 50 });
  if (gen !== generation) return;
  const stuck = page.items;
  show(
    h("h1", {}, "Overview"),
    countCards(page.counts || {}),
    h(
      "section",
      { class: `panel ${stuck.length ? "alarm" : ""}` },
      h("h2", {}, stuck.length ? `Stuck: ${needs(page.counts?.stuck ?? stuck.length)} an operator` : "Nothing is stuck"),
      stuck.length
        ? table(SUMMARY_HEADERS, summaryRows(stuck), { id: "stuck-list", class: "list" })
        : h("p", { class: "muted", id: "stuck-list-empty" }, "No transaction is waiting for an operator."),
      page.next_cursor ? h("p", {}, h("a", { href: "#/list?state=stuck" }, "All stuck transactions…")) : null,
    ),
    h("p", { class: "muted" }, "Refreshes every 10 seconds. ", h("button", { type: "button", onclick: () => route() }, "Refresh now")),
  );
  setTimeout(() => gen === generation && route(), HOME_REFRESH_MS);
}

// ---- list --------------------------------------------------------------------

/** Filters the dashboard offers; the last four need a coordinator that knows them. */
const FILTERS = [
  { name: "id_prefix", label: "Id starts with", placeholder: "e.g. 0190b6c2" },
  { name: "kind", label: "Kind", options: ["", "saga", "twopc"] },
  { name: "state", label: "State", options: ["", ...STATES] },
  { name: "definition", label: "Definition", placeholder: "e.g. order" },
  { name: "step", label: "Step", placeholder: "e.g. charge" },
  { name: "participant", label: "Participant URL", placeholder: "e.g. http://payments:8080" },
  { name: "in_flight_longer_than", label: "In flight longer than", placeholder: "e.g. 5m, 1h" },
  { name: "limit", label: "Per page", options: ["", "20", "50", "100", "500"] },
];
const NEWER_FILTERS = ["id_prefix", "step", "participant", "in_flight_longer_than"];

function filterForm(params) {
  const fields = FILTERS.map((f) => {
    const id = `filter-${f.name}`;
    const value = params.get(f.name) || "";
    const input = f.options
      ? h("select", { id, name: f.name }, f.options.map((o) => h("option", { value: o, selected: o === value }, o || "any")))
      : h("input", { id, name: f.name, value, placeholder: f.placeholder, type: f.name === "id_prefix" ? "search" : "text" });
    return h("label", { class: "field", for: id }, h("span", {}, f.label), input);
  });
  return h(
    "form",
    {
      class: "filters",
      id: "filters",
      onsubmit: (ev) => {
        ev.preventDefault();
        const next = new URLSearchParams();
        for (const [k, v] of new FormData(ev.target)) if (String(v).trim()) next.set(k, String(v).trim());
        location.hash = `#/list?${next}`;
      },
    },
    fields,
    h("div", { class: "buttons" }, h("button", { type: "submit", id: "filter-apply" }, "Search"), h("a", { href: "#/list", class: "button" }, "Clear")),
  );
}

async function list(gen, params) {
  const query = Object.fromEntries(params);
  let page;
  let failure;
  try {
    page = await api.listTransactions(query);
  } catch (e) {
    failure = e;
  }
  if (gen !== generation) return;
  const body = [];
  if (failure) {
    let text = describe(failure);
    const asked = NEWER_FILTERS.filter((f) => params.has(f));
    if (failure.status === 400 && asked.length) {
      text += ` — this coordinator may not support the filter${asked.length > 1 ? "s" : ""} ${asked.join(", ")} yet.`;
    }
    body.push(h("p", { class: "error", id: "list-error" }, text));
  } else {
    body.push(h("p", { class: "muted small" }, "All transactions by state (select one to filter):"));
    body.push(countCards(page.counts || {}, params.get("state")));
    body.push(
      page.items.length
        ? table(SUMMARY_HEADERS, summaryRows(page.items), { id: "tx-list", class: "list" })
        : h("p", { class: "muted", id: "tx-list-empty" }, "No transaction matches these filters."),
    );
    const nav = [];
    if (params.has("cursor")) {
      const first = new URLSearchParams(params);
      first.delete("cursor");
      nav.push(h("a", { class: "button", href: `#/list?${first}`, id: "first-page" }, "First page"));
    }
    if (page.next_cursor) {
      const next = new URLSearchParams(params);
      next.set("cursor", page.next_cursor);
      nav.push(h("a", { class: "button", href: `#/list?${next}`, id: "next-page" }, "Next page"));
    }
    body.push(h("div", { class: "pager" }, nav));
  }
  show(h("h1", {}, "Transactions"), filterForm(params), ...body);
}

// ---- detail ------------------------------------------------------------------

/** Steps of a saga with their dependencies from the definition (default: the step before). */
async function sagaNodes(saga) {
  let deps = new Map();
  try {
    const def = await api.definitionVersion(saga.definition, saga.version);
    const specSteps = (def.spec && def.spec.steps) || [];
    specSteps.forEach((s, i) => {
      deps.set(s.name, Array.isArray(s.depends_on) ? s.depends_on : i > 0 ? [specSteps[i - 1].name] : []);
    });
  } catch {
    deps = new Map(); // the graph falls back to the listed order
  }
  return saga.steps.map((s, i) => ({
    name: s.name,
    state: s.state,
    deps: deps.get(s.name) ?? (i > 0 ? [saga.steps[i - 1].name] : []),
    lines: [`tries ${s.attempts}`, s.compensation_attempts ? `undo ${s.compensation_attempts}` : null, s.last_status ? `last ${s.last_status}` : null].filter(Boolean),
  }));
}

function branchNodes(tx) {
  const root = { name: "decision", state: tx.decision || tx.state, deps: [], lines: [tx.mode] };
  return [
    root,
    ...tx.branches.map((b) => ({
      name: b.name,
      state: b.state,
      deps: ["decision"],
      lines: [`prepare ${b.prepare_attempts}`, `phase 2 ${b.phase_two_attempts}`, b.last_status ? `last ${b.last_status}` : null].filter(Boolean),
    })),
  ];
}

function stepsTable(saga) {
  return table(
    ["step", "state", "attempts", "undo attempts", "next attempt", "last status", "last error", "output"],
    saga.steps.map((s) =>
      h(
        "tr",
        { "data-step": s.name },
        h("td", {}, s.name),
        h("td", {}, badge(s.state)),
        h("td", { class: "num" }, s.attempts),
        h("td", { class: "num" }, s.compensation_attempts),
        h("td", {}, time(s.next_attempt_at)),
        h("td", { class: "num" }, s.last_status ?? "—"),
        h("td", { class: "error-text" }, s.last_error || ""),
        h("td", {}, s.output === undefined || s.output === null ? "—" : json(s.output)),
      ),
    ),
    { id: "steps", class: "list" },
  );
}

function branchesTable(tx) {
  return table(
    ["branch", "state", "prepare attempts", "phase-2 attempts", "next attempt", "last status", "last error", "urls"],
    tx.branches.map((b) =>
      h(
        "tr",
        { "data-step": b.name },
        h("td", {}, b.name),
        h("td", {}, badge(b.state)),
        h("td", { class: "num" }, b.prepare_attempts),
        h("td", { class: "num" }, b.phase_two_attempts),
        h("td", {}, time(b.next_attempt_at)),
        h("td", { class: "num" }, b.last_status ?? "—"),
        h("td", { class: "error-text" }, b.last_error || ""),
        h("td", { class: "mono small" }, [b.prepare_url, b.commit_url, b.abort_url].filter(Boolean).join("\n")),
      ),
    ),
    { id: "steps", class: "list" },
  );
}

function outcome(e) {
  if (e.kind !== "attempt") return e.status_code ? String(e.status_code) : "";
  const ok = e.status_code && e.status_code >= 200 && e.status_code < 300 && !e.error;
  const why = ok ? e.status_code : e.error || e.status_code || "no answer";
  return h("span", { class: ok ? "ok" : "error-text" }, `${ok ? "ok" : "failed"} · ${why}`);
}

function eventDetail(e) {
  if (!e.detail) return "";
  if (typeof e.detail === "object" && typeof e.detail.note === "string") {
    const rest = { ...e.detail };
    delete rest.note;
    return h("span", {}, h("q", { class: "note" }, e.detail.note), Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : "");
  }
  return h("code", { class: "small" }, JSON.stringify(e.detail));
}

function timeline(events) {
  return table(
    ["at", "event", "step", "phase", "attempt", "outcome", "duration", "actor", "note / detail"],
    events.map((e) =>
      h(
        "tr",
        { class: e.kind.startsWith("operator_") ? "operator" : "", "data-kind": e.kind },
        h("td", { class: "nowrap" }, time(e.at)),
        h("td", {}, e.kind),
        h("td", {}, e.step || ""),
        h("td", {}, e.phase || ""),
        h("td", { class: "num" }, e.attempt ?? ""),
        h("td", { class: "outcome" }, outcome(e)),
        h("td", { class: "num" }, e.duration_ms === null || e.duration_ms === undefined ? "" : `${e.duration_ms} ms`),
        h("td", {}, e.actor),
        h("td", {}, eventDetail(e)),
      ),
    ),
    { id: "timeline", class: "list" },
  );
}

function actionBar(detail) {
  const steps = detail.saga ? detail.saga.steps.map((s) => s.name) : (detail.transaction?.branches || []).map((b) => b.name);
  return h(
    "div",
    { class: "actions", id: "actions" },
    Object.keys(ACTIONS).map((action) =>
      h(
        "button",
        {
          type: "button",
          class: action === "compensate" || action === "resolve" ? "danger" : "",
          "data-action": action,
          title: ACTIONS[action],
          onclick: () => openAction(detail.summary.id, action, steps),
        },
        action,
      ),
    ),
  );
}

async function detailView(gen, id) {
  const detail = await api.transaction(id);
  const nodes = detail.saga ? await sagaNodes(detail.saga) : detail.transaction ? branchNodes(detail.transaction) : [];
  if (gen !== generation) return;
  const t = detail.summary;
  const facts = [
    ["kind", t.kind],
    ["definition", definitionOf(t)],
    ["reason", t.reason || "—"],
    ["owner", t.owner || "—"],
    ["created", time(t.created_at)],
    ["updated", time(t.updated_at)],
    ["next attempt", time(t.next_attempt_at)],
  ];
  if (detail.saga?.deadline || detail.transaction?.deadline) facts.push(["deadline", time(detail.saga?.deadline || detail.transaction?.deadline)]);
  if (detail.transaction?.decision) facts.push(["decision", detail.transaction.decision]);
  show(
    h("p", {}, h("a", { href: "#/list" }, "← transactions")),
    h("h1", {}, "Transaction ", h("span", { class: "mono", id: "tx-id" }, t.id), " ", h("span", { id: "tx-state", "data-state": t.state }, badge(t.state))),
    h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    actionBar(detail),
    h("section", { class: "panel" }, h("h2", {}, detail.saga ? "Steps" : "Branches"), h("div", { class: "graph-wrap", id: "graph" }, nodes.length ? stepGraph(nodes) : "—"), detail.saga ? stepsTable(detail.saga) : detail.transaction ? branchesTable(detail.transaction) : null),
    detail.saga ? h("section", { class: "panel" }, h("h2", {}, "Input"), json(detail.saga.input)) : null,
    h("section", { class: "panel" }, h("h2", {}, `Timeline (${detail.events.length} events)`), timeline(detail.events)),
  );
  if (!AT_REST.has(t.state)) setTimeout(() => gen === generation && route({ keepNotice: true }), REFRESH_MS);
}

// ---- actions -----------------------------------------------------------------

const dialog = document.getElementById("action-dialog");
const form = document.getElementById("action-form");
const dialogError = document.getElementById("action-error");
let pending = null;

function openAction(id, action, steps) {
  pending = { id, action };
  document.getElementById("action-title").textContent = `${action[0].toUpperCase()}${action.slice(1)} transaction ${id.slice(0, 8)}…?`;
  document.getElementById("action-explain").textContent = ACTIONS[action];
  document.getElementById("skip-fields").hidden = action !== "skip";
  document.getElementById("action-step").replaceChildren(...steps.map((s) => h("option", { value: s }, s)));
  document.getElementById("action-output").value = "{}";
  document.getElementById("action-note").value = "";
  document.getElementById("action-confirm").textContent = action;
  document.getElementById("action-confirm").disabled = false;
  dialogError.hidden = true;
  dialog.showModal();
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!pending) return;
  const { id, action } = pending;
  const note = document.getElementById("action-note").value.trim();
  const body = note ? { note } : {};
  if (action === "skip") {
    body.step = document.getElementById("action-step").value;
    try {
      body.output = JSON.parse(document.getElementById("action-output").value || "null");
    } catch (e) {
      dialogError.textContent = `The output is not valid JSON: ${e.message}`;
      dialogError.hidden = false;
      return;
    }
  }
  const confirm = document.getElementById("action-confirm");
  confirm.disabled = true;
  try {
    const answer = await api.act(id, action, body);
    pending = null;
    dialog.close();
    showNotice(`${action} accepted (the coordinator answered: ${answer?.state ?? "done"}).`, "ok");
    route({ keepNotice: true });
  } catch (e) {
    dialogError.textContent = describe(e);
    dialogError.hidden = false;
    confirm.disabled = false;
  }
});

document.getElementById("action-cancel").addEventListener("click", () => {
  pending = null;
  dialog.close();
});

// ---- token and routing -------------------------------------------------------

const tokenInput = document.getElementById("token");
const tokenStatus = document.getElementById("token-status");

function showTokenStatus() {
  tokenStatus.textContent = api.token() ? "token set for this tab" : "no token";
}

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  api.setToken(tokenInput.value.trim());
  showTokenStatus();
  route();
});
document.getElementById("token-clear").addEventListener("click", () => {
  api.setToken("");
  tokenInput.value = "";
  showTokenStatus();
  route();
});

async function route(options = {}) {
  const gen = ++generation;
  if (!options.keepNotice) showNotice("");
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === (path.startsWith("/list") ? "list" : path === "/" ? "home" : ""));
  }
  try {
    if (path === "/" || path === "") await home(gen);
    else if (path === "/list") await list(gen, new URLSearchParams(query));
    else if (path.startsWith("/tx/")) await detailView(gen, decodeURIComponent(path.slice(4)));
    else view.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Go home")));
  } catch (e) {
    if (gen !== generation) return;
    showNotice(describe(e));
    if (view.querySelector("p.muted") && view.children.length === 1) view.replaceChildren();
  }
}

tokenInput.value = api.token();
showTokenStatus();
window.addEventListener("hashchange", () => route());
route();

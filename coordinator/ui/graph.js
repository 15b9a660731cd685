// The step graph of the detail view: one box per step (or 2PC branch) coloured by
// its state, in columns by dependency depth, with an arrow from each dependency.

const SVG = "http://www.w3.org/2000/svg";
const BOX_W = 190;
const BOX_H = 68;
const GAP_X = 64;
const GAP_Y = 18;
const PAD = 12;

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * nodes: [{ name, state, deps: [name], lines: [string] }] in definition order.
 * Returns an <svg> element.
 */
export function stepGraph(nodes) {
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const depth = new Map();
  const depthOf = (n, seen = new Set()) => {
    if (depth.has(n.name)) return depth.get(n.name);
    if (seen.has(n.name)) return 0; // a cycle cannot be registered; never loop on bad data
    seen.add(n.name);
    const deps = n.deps.map((d) => byName.get(d)).filter(Boolean);
    const d = deps.length ? 1 + Math.max(...deps.map((x) => depthOf(x, seen))) : 0;
    depth.set(n.name, d);
    return d;
  };
  const columns = [];
  for (const n of nodes) {
    const d = depthOf(n);
    (columns[d] ||= []).push(n);
  }
  const place = new Map();
  columns.forEach((column, c) => {
    column.forEach((n, r) => {
      place.set(n.name, { x: PAD + c * (BOX_W + GAP_X), y: PAD + r * (BOX_H + GAP_Y) });
    });
  });
  const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const width = PAD * 2 + columns.length * BOX_W + Math.max(0, columns.length - 1) * GAP_X;
  const height = PAD * 2 + rows * BOX_H + (rows - 1) * GAP_Y;

  const svg = el("svg", {
    class: "graph",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": "step graph",
  });
  const defs = el("defs");
  const marker = el("marker", {
    id: "arrow",
    viewBox: "0 0 10 10",
    refX: 9,
    refY: 5,
    markerWidth: 7,
    markerHeight: 7,
    orient: "auto-start-reverse",
  });
  marker.append(el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }));
  defs.append(marker);
  svg.append(defs);

  for (const n of nodes) {
    const to = place.get(n.name);
    for (const dep of n.deps) {
      const from = place.get(dep);
      if (!from) continue;
      const x1 = from.x + BOX_W;
      const y1 = from.y + BOX_H / 2;
      const x2 = to.x - 2;
      const y2 = to.y + BOX_H / 2;
      const mid = (x1 + x2) / 2;
      svg.append(
        el("path", {
          class: "edge",
          d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
          "marker-end": "url(#arrow)",
        }),
      );
    }
  }
  for (const n of nodes) {
    const { x, y } = place.get(n.name);
    const g = el("g", { class: `node state-${n.state}`, "data-step": n.name });
    g.append(el("title", {}, `${n.name}: ${n.state}`));
    g.append(el("rect", { x, y, width: BOX_W, height: BOX_H, rx: 6 }));
    g.append(el("text", { x: x + 10, y: y + 20, class: "name" }, clip(n.name, 24)));
    g.append(el("text", { x: x + 10, y: y + 38, class: "state" }, n.state));
    if (n.lines && n.lines.length) {
      g.append(el("text", { x: x + 10, y: y + 56, class: "meta" }, clip(n.lines.join(" · "), 30)));
    }
    svg.append(g);
  }
  return svg;
}

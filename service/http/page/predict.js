// The page at `/`: choose a model, give it images (pick, drop or paste), and see for each the label, the top
// probabilities, its OOD score among the model's calibration scores, the p-value in words and the verdict.
// Each image is its own `predict` request, so one unreadable file does not take the others down with it.
import { count, el, formatScore, getJson, histogram, ID_COLOR, paintSwatches, percent, pValueWords } from "./plots.js";

const TOP_K = 5;
const ACCEPTED = "#1b7f3b";
const REJECTED = "#b3261e";
const PHONE = window.matchMedia("(max-width: 40rem)");

const select = document.getElementById("model");
const about = document.getElementById("model-about");
const cardLink = document.getElementById("card-link");
const input = document.getElementById("files");
const results = document.getElementById("results");
const status = document.getElementById("status");

let models = new Map();
let current = [];  // the images shown, sent again when another model is chosen

async function start() {
  let list;
  try {
    list = await getJson("models");
  } catch (err) {
    status.textContent = `Could not read the served models: ${err.message}`;
    return;
  }
  models = new Map(list.models.map((m) => [m.name, m]));
  select.replaceChildren(...list.models.map((m) =>
    el("option", { value: m.name }, `${m.name}${m.default ? " (default)" : ""}`)));
  const asked = new URLSearchParams(location.search).get("model");
  select.value = models.has(asked) ? asked : list.default_model;
  select.disabled = false;
  describeModel();
  document.body.dataset.ready = "true";
}

function model() {
  return models.get(select.value);
}

function describeModel() {
  const m = model();
  if (!m) return;
  const size = `${m.input.width}×${m.input.height} ${m.input.color_mode === "L" ? "grey" : "colour"}`;
  about.textContent = `${m.method} on ${m.dataset}, ${m.classes.length} classes, ${size} input. Its threshold ` +
    `keeps ${percent(m.tpr, 0)} of in-distribution images.`;
  cardLink.href = `card/${encodeURIComponent(m.name)}`;
  const url = new URL(location.href);
  url.searchParams.set("model", m.name);
  history.replaceState(null, "", url);
}

async function show(files) {
  // Every file goes to the service, whatever its type claims: what it cannot read comes back as its own error.
  current = files;
  if (!current.length) return;
  const m = model();
  results.replaceChildren(...current.map((file) => placeholder(file)));
  status.textContent = `Asking ${m.name} about ${current.length} image${current.length > 1 ? "s" : ""}…`;
  const done = await Promise.all(current.map((file, i) => predictOne(file, m, results.children[i])));
  const rejected = done.filter((v) => v === "rejected").length;
  const failed = done.filter((v) => v === "error").length;
  status.textContent = `${m.name}: ${done.length - rejected - failed} accepted, ${rejected} rejected` +
    (failed ? `, ${failed} not read` : "") + ".";
}

function placeholder(file) {
  const thumb = el("img", { class: "thumb", alt: "", src: URL.createObjectURL(file) });
  return el("article", { class: "result pending", "data-filename": file.name || "pasted image" },
    thumb, el("div", { class: "body" }, el("h2", {}, file.name || "pasted image"), el("p", { class: "muted" }, "…")));
}

async function predictOne(file, m, article) {
  const form = new FormData();
  form.append("file", file, file.name || "pasted-image");
  const body = article.querySelector(".body");
  try {
    const response = await fetch(`predict?model=${encodeURIComponent(m.name)}&top_k=${Math.min(TOP_K, m.classes.length)}`,
      { method: "POST", body: form });
    const answer = await response.json().catch(() => null);
    if (!response.ok) throw new Error(answer?.error?.message || `HTTP ${response.status}`);
    const p = answer.predictions[0];
    body.replaceChildren(...verdict(p, m));
    paintSwatches(body);
    for (const bar of body.querySelectorAll(".bar[data-share]")) bar.style.width = `${100 * bar.dataset.share}%`;
    article.className = `result ${p.is_ood ? "rejected" : "accepted"}`;
    article.dataset.verdict = p.is_ood ? "rejected" : "accepted";
    article.dataset.label = p.label;
    return article.dataset.verdict;
  } catch (err) {
    body.replaceChildren(el("h2", {}, file.name || "pasted image"),
      el("p", { class: "verdict" }, "Not read"), el("p", { class: "error" }, err.message));
    article.className = "result error";
    article.dataset.verdict = "error";
    return "error";
  }
}

function verdict(p, m) {
  const head = p.is_ood
    ? [el("strong", {}, "Rejected"), `: unlike what the model was trained on. Its best guess, `,
      el("q", {}, p.label), ` (${percent(p.confidence)}), should not be trusted.`]
    : [el("strong", {}, "Accepted"), ": ", el("q", {}, p.label), ` (${percent(p.confidence)}).`];
  const probs = el("ol", { class: "probs", "aria-label": "Most probable classes" },
    Object.entries(p.probabilities).map(([name, share]) => el("li", {},
      el("span", { class: "class-name" }, name),
      el("span", { class: "bar-track" }, el("span", { class: "bar", "data-share": share })),
      el("span", { class: "share" }, percent(share)))));
  const color = p.is_ood ? REJECTED : ACCEPTED;
  const plot = histogram({
    edges: m.calibration_histogram.edges,
    rows: [{ name: "calibration", counts: m.calibration_histogram.counts.calibration, color: ID_COLOR }],
    threshold: m.threshold,
    width: PHONE.matches ? 340 : 560,  // the chart's own units: fewer of them keep its text legible on a phone
    marker: { score: p.ood_score, color, label: "this image" },
    label: `This image's OOD score ${formatScore(p.ood_score)} against the ${count(m.calibration_images)} ` +
      `in-distribution calibration images; threshold ${formatScore(m.threshold)}.`,
  });
  return [
    el("h2", {}, p.filename || "pasted image"),
    el("p", { class: "verdict" }, ...head),
    probs,
    el("figure", {}, plot, el("figcaption", {},
      `OOD score ${formatScore(p.ood_score)}, threshold ${formatScore(m.threshold)}. The grey shape: the ` +
      `${count(m.calibration_images)} in-distribution images the threshold was set on (${m.calibration_split}).`)),
    el("p", { class: "p-value" }, pValueWords(p.p_value, m.calibration_images)),
  ];
}

select.addEventListener("change", () => {
  describeModel();
  if (current.length) show(current);
});
document.getElementById("pick").addEventListener("click", () => input.click());
input.addEventListener("change", () => show([...input.files]));

const drop = document.getElementById("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  show([...e.dataTransfer.files]);
});
document.addEventListener("paste", (e) => {
  const files = [...e.clipboardData.items].filter((i) => i.kind === "file").map((i) => i.getAsFile());
  if (files.length) show(files);
});

start();

// The page at `card/NAME`: one served model's card, drawn from its metadata (`models/NAME`): what it is, what it
// saw, how it did on each kind of input it was tested on (the table, ROC curves, score histograms), and where
// its threshold lies.
import {
  COLORS, count, el, formatScore, getJson, histogram, ID_COLOR, legend, paintSwatches, percent, roc, rocPoints,
} from "./plots.js";

const ID_ROW = "in-distribution test";

const main = document.getElementById("card");
const status = document.getElementById("status");

async function start() {
  const name = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const version = new URLSearchParams(location.search).get("version");
  document.getElementById("try-link").href = `../?model=${encodeURIComponent(name)}`;
  let m;
  try {
    m = await getJson(`../models/${encodeURIComponent(name)}${version ? `?version=${encodeURIComponent(version)}` : ""}`);
  } catch (err) {
    status.textContent = `No card: ${err.message}`;
    document.body.dataset.ready = "error";
    return;
  }
  document.title = `${m.name} · model card · oodserve`;
  document.getElementById("title").textContent = m.name;
  status.replaceWith(
    el("p", { class: "lead" }, summary(m)),
    section("What it is", facts(whatItIs(m))),
    section("What it saw", el("ul", {}, whatItSaw(m).map((line) => el("li", {}, line)))),
    section("How it did", ...evaluation(m)),
    section("Its threshold", ...threshold(m)),
  );
  paintSwatches(main);
  document.body.dataset.ready = "true";
}

function summary(m) {
  return `A ${m.classes.length}-class classifier of ${m.dataset} images (${m.method}); its OOD score is ` +
    `${m.score}. Its threshold keeps ${percent(m.tpr, 0)} of in-distribution images and rejects what scores ` +
    `above it: "I don't know" instead of a confident wrong answer.`;
}

function section(title, ...children) {
  return el("section", { class: "section" }, el("h2", {}, title), ...children);
}

function facts(rows) {
  return el("table", { class: "facts" },
    el("tbody", {}, rows.filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([key, value]) => el("tr", {}, el("th", { scope: "row" }, key), el("td", {}, value)))));
}

function whatItIs(m) {
  const i = m.input;
  return [
    ["architecture", m.architecture],
    ["method", m.method],
    ["OOD score", m.score],
    ["input", `${i.width}×${i.height}, ${i.channels === 1 ? "grey (L)" : "RGB"}; other sizes by ${i.resize}`],
    ["classes", el("div", { class: "classes" }, m.classes.join(", "))],
    ["precision", m.precision + (m.quantized_from ? `, quantized from ${m.quantized_from}` : "")],
    ["version", `${m.version} (the file says ${m.model_version})${m.default ? "; the default model" : ""}`],
    ["made", m.created],
    ["file", m.source],
    ["runs on", m.providers.join(", ")],
  ];
}

function whatItSaw(m) {
  const lines = [`In-distribution: ${m.dataset}, ${m.classes.length} classes.`];
  if (m.training_negatives?.length) {
    lines.push(`Negatives in training (inputs it was taught to reject): ${m.training_negatives.join("; ")}.`);
  } else if (m.training_negatives) {
    lines.push("Negatives in training: none; the OOD score comes from the in-distribution data alone.");
  }
  const ph = m.posthoc;
  if (ph) {
    lines.push(`Post-hoc: the classifier ${ph.classifier} was trained first; its score was fitted afterwards on ` +
      `${count(ph.fit_images)} in-distribution images, ${count(ph.held_out_images)} more held out of fit and threshold alike` +
      (ph.held_out_reject_rate !== null ? ` (${percent(ph.held_out_reject_rate)} of them rejected).` : "."));
    for (const s of ph.sources) {
      lines.push(`Feature source ${s.name}: ${s.dim} features` + (s.weights ? `, weights from ${s.weights}` : "") +
        (s.input_size ? `, run at ${s.input_size} px.` : "."));
    }
    for (const s of ph.scores) lines.push(`Score ${s.score} on ${s.source}.`);
    if (ph.choice_set) lines.push(`The score was chosen against ${ph.choice_set}, none of the sets below.`);
  }
  lines.push(`Threshold: set on ${count(m.calibration_images)} in-distribution images (${m.calibration_split}), ` +
    "never the test split.");
  const r = m.recalibration;
  if (r) {
    lines.push(`Recalibrated on the folder ${r.folder}: ${r.images} images, ${r.held_out} held out; they were ` +
      `rejected ${percent(r.held_out_reject_rate_before)} before and ${percent(r.held_out_reject_rate_after)} after.`);
  }
  const ev = m.evaluation;
  if (Object.keys(ev.ood).length) {
    lines.push(`Tested on ${ev.test_split ?? "its test split"} and ${Object.keys(ev.ood).length} kinds of ` +
      "out-of-distribution input (below).");
  }
  return lines;
}

function evaluation(m) {
  const ev = m.evaluation;
  const out = [];
  const lines = [];
  if (ev.test_accuracy !== null) lines.push(`Accuracy ${percent(ev.test_accuracy, 2)} on ${ev.test_split}.`);
  if (ev.id_reject_rate !== null) {
    lines.push(`${percent(ev.id_reject_rate, 2)} of those test images rejected at the threshold (promised: ` +
      `about ${percent(1 - m.tpr, 0)}).`);
  }
  if (lines.length) out.push(el("p", {}, lines.join(" ")));
  const names = Object.keys(ev.ood);
  if (!names.length) return [...out, el("p", { class: "muted" }, "The file records no OOD evaluation.")];
  out.push(el("div", { class: "table-wrap" }, el("table", { class: "results", id: "ood-table" },
    el("caption", { class: "muted" }, "In-distribution test images are the positive class."),
    el("thead", {}, el("tr", {}, ["OOD set", "AUROC", "FPR at 95 % TPR", "accepted at the threshold", "mean max confidence"]
      .map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, names.map((n) => {
      const r = ev.ood[n];
      return el("tr", {}, el("td", {}, n), el("td", {}, r.auroc.toFixed(4)), el("td", {}, r.fpr_at_95_tpr.toFixed(4)),
        el("td", {}, r.accepted === null ? "n/a" : percent(r.accepted, 2)),
        el("td", {}, r.mmc === null ? "n/a" : r.mmc.toFixed(3)));
    })))));
  return [...out, ...plots(m, names)];
}

function plots(m, names) {
  const h = m.evaluation.histograms;
  if (!h) {
    return [el("p", { class: "muted", id: "no-histograms" }, "This file carries no score histograms (it was " +
      "exported before they were stored), so its ROC curves and score histograms cannot be drawn.")];
  }
  const drawn = names.filter((n) => h.counts[n]);
  const color = new Map(drawn.map((n, i) => [n, COLORS[i % COLORS.length]]));
  const idKept = 1 - (m.evaluation.id_reject_rate ?? 1 - m.tpr);
  const curves = drawn.map((n) => ({
    name: n, color: color.get(n), points: rocPoints(h.counts[ID_ROW], h.counts[n]),
    at: m.evaluation.ood[n].accepted === null ? null : [m.evaluation.ood[n].accepted, idKept],
  }));
  const rocFigure = el("div", { class: "roc-wrap" },
    el("figure", { class: "roc", id: "roc" }, roc({ curves, label: `ROC curves of ${m.name} on ${drawn.length} OOD sets` }),
      el("figcaption", {}, "Each dot: the stored threshold.")),
    legend(curves));
  const small = el("div", { class: "plots", id: "histograms" }, drawn.map((n) => el("figure", {},
    histogram({
      edges: h.edges, threshold: m.threshold, width: 360, height: 190,
      rows: [{ name: ID_ROW, counts: h.counts[ID_ROW], color: ID_COLOR }, { name: n, counts: h.counts[n], color: color.get(n) }],
      label: `OOD scores of the in-distribution test images and of ${n}`,
    }),
    el("figcaption", {}, `grey: in-distribution test; colour: ${n}`))));
  const missing = names.filter((n) => !h.counts[n]);
  const note = missing.length
    ? el("p", { class: "muted" }, `Not drawn (no histogram stored for them): ${missing.join(", ")}.`)
    : null;
  return [el("h3", {}, "ROC curves"), rocFigure, note, el("h3", {}, "Score histograms"), small];
}

function threshold(m) {
  const h = m.calibration_histogram;
  return [
    el("p", {}, `Threshold ${formatScore(m.threshold)}: an image scoring above it is rejected. It keeps ` +
      `${percent(m.tpr, 0)} of the ${count(m.calibration_images)} in-distribution images it was set on ` +
      `(${m.calibration_split}).`),
    el("figure", { class: "roc", id: "calibration" }, histogram({
      edges: h.edges, threshold: m.threshold, rows: [{ name: "calibration", counts: h.counts.calibration, color: ID_COLOR }],
      label: `OOD scores of the ${count(m.calibration_images)} calibration images and the threshold`,
    })),
  ];
}

start();

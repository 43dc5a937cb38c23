// The arena page. Every text from the prompt, a model or the server is set with textContent: shown, never parsed
// as HTML (and the page's Content-Security-Policy lets no other script run anyway).
"use strict";

const $ = (id) => document.getElementById(id);
const SIDES = ["a", "b"];
let round = null; // the round on screen: {id, failed, reading (an AbortController)}
let maxChars = 4000;

function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

function setVoting(enabled) {
  for (const button of document.querySelectorAll(".votes button")) button.disabled = !enabled;
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `The arena answered HTTP ${response.status}.`);
  return data;
}

function clearRound() {
  if (round) round.reading.abort(); // a new round: stop reading the old replies, which frees their servers
  round = null;
  notice("");
  setVoting(false);
  for (const side of SIDES) {
    $(`reply-${side}`).textContent = "";
    $(`reply-${side}`).dataset.chunks = "0";
    delete $(`reply-${side}`).dataset.state;
    $(`status-${side}`).textContent = "";
    $(`name-${side}`).textContent = "";
  }
  for (const button of document.querySelectorAll(".votes button")) button.classList.remove("chosen");
  $("asked").hidden = true;
  $("reveal").hidden = true;
  $("new-round").hidden = true;
  $("prompt").readOnly = false;
  $("send").disabled = false;
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  clearRound();
  if (!prompt) return notice("Write a prompt first: it is empty.");
  if (prompt.length > maxChars) {
    return notice(`The prompt has ${prompt.length.toLocaleString("en")} characters; the limit is ` +
                  `${maxChars.toLocaleString("en")}. Shorten it and send it again.`);
  }
  $("send").disabled = true;
  $("prompt").readOnly = true;
  let created;
  try {
    created = await api("/api/rounds", {prompt});
  } catch (err) {
    clearRound();
    return notice(err.message);
  }
  const current = {id: created.round_id, failed: false, reading: new AbortController()};
  round = current;
  $("asked-text").textContent = prompt;
  $("asked").hidden = false;
  $("new-round").hidden = false;
  await Promise.all(SIDES.map((side) => stream(current, side)));
  if (round === current && !current.failed) setVoting(true);
}

async function stream(current, side) {
  const reply = $(`reply-${side}`);
  const status = $(`status-${side}`);
  status.textContent = "answering…";
  try {
    const response = await fetch(`/api/rounds/${current.id}/${side}`, {signal: current.reading.signal});
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      throw new Error(data.error || `The arena answered HTTP ${response.status}.`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const message = JSON.parse(buffer.slice(0, end));
        buffer = buffer.slice(end + 1);
        if (round !== current) return; // a new round replaced this one
        if (message.error) throw new Error(message.error);
        if (message.delta !== undefined) {
          reply.textContent += message.delta;
          reply.dataset.chunks = String(Number(reply.dataset.chunks) + 1);
        }
        if (message.done !== undefined) {
          status.textContent = message.done === "length" ? "done (cut at the length limit)" : "done";
          reply.dataset.state = "done";
          return;
        }
      }
    }
    throw new Error(`Model ${side.toUpperCase()}'s reply broke off. No vote can be recorded for this round: ` +
                    "start a new one.");
  } catch (err) {
    if (round !== current) return;
    current.failed = true;
    reply.dataset.state = "failed";
    status.textContent = "failed";
    notice(err.message);
  }
}

async function vote(event) {
  const button = event.currentTarget;
  const current = round;
  setVoting(false);
  try {
    const result = await api(`/api/rounds/${current.id}/vote`, {vote: button.dataset.vote});
    button.classList.add("chosen");
    $("name-a").textContent = `: ${result.model_a}`;
    $("name-b").textContent = `: ${result.model_b}`;
    $("reveal").textContent = result.recorded ? "Thank you: your vote is recorded." :
      "This round's vote was already recorded; it counts once.";
    $("reveal").hidden = false;
    if (!$("board").hidden) await showBoard();
  } catch (err) {
    notice(err.message);
  }
}

function cell(row, text, tag = "td") {
  const element = document.createElement(tag);
  element.textContent = text;
  row.append(element);
  return element;
}

async function showBoard() {
  let data;
  try {
    data = await api("/api/leaderboard");
  } catch (err) {
    $("board-summary").textContent = err.message;
    return;
  }
  const waiting = data.unvoted.length ? ` No votes yet: ${data.unvoted.join(", ")}.` : "";
  $("board-summary").textContent = `${data.total_votes} vote${data.total_votes === 1 ? "" : "s"}.${waiting}`;
  const body = $("scores").tBodies[0];
  body.replaceChildren();
  for (const r of data.rows) {
    const row = body.insertRow();
    for (const text of [r.rank, r.model, r.score.toFixed(0), `${r.lower.toFixed(0)} – ${r.upper.toFixed(0)}`,
                        r.votes, `${r.wins} / ${r.losses} / ${r.ties}`]) cell(row, String(text));
  }
  const matrix = $("win-rate");
  matrix.replaceChildren();
  const head = matrix.createTHead().insertRow();
  cell(head, "", "th");
  for (const model of data.models) cell(head, model, "th");
  const rows = matrix.createTBody();
  data.models.forEach((model, i) => {
    const row = rows.insertRow();
    cell(row, model, "th");
    data.models.forEach((_, j) => {
      const rate = data.win_rate[i][j];
      cell(row, i === j ? "" : `${rate === null ? "–" : `${Math.round(rate * 100)}%`} (${data.battles[i][j]})`);
    });
  });
}

function showTab(name) {
  $("arena").hidden = name !== "arena";
  $("board").hidden = name !== "board";
  $("tab-arena").setAttribute("aria-selected", String(name === "arena"));
  $("tab-board").setAttribute("aria-selected", String(name === "board"));
  if (name === "board") showBoard();
}

function countChars() {
  const length = $("prompt").value.trim().length;
  $("count").textContent = `${length.toLocaleString("en")} / ${maxChars.toLocaleString("en")} characters`;
}

document.addEventListener("DOMContentLoaded", async () => {
  $("ask").addEventListener("submit", send);
  $("new-round").addEventListener("click", () => { clearRound(); $("prompt").focus(); });
  for (const button of document.querySelectorAll(".votes button")) button.addEventListener("click", vote);
  $("tab-arena").addEventListener("click", () => showTab("arena"));
  $("tab-board").addEventListener("click", () => showTab("board"));
  $("prompt").addEventListener("input", countChars);
  try {
    maxChars = (await api("/api/settings")).max_prompt_chars;
  } catch (err) {
    notice(err.message);
  }
  countChars();
});

// Live updates of the console's pages; our own code, no library, no network but this site.
// Everything received is put in with textContent, never as HTML.
"use strict";

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren();
  for (const values of rows) {
    const tr = document.createElement("tr");
    for (const value of values) cell(tr, value);
    tbody.appendChild(tr);
  }
}

function watchOrder(section) {
  const note = document.getElementById("live-note");
  const source = new EventSource(section.dataset.events);
  source.addEventListener("order", (message) => {
    const order = JSON.parse(message.data);
    document.getElementById("order-state").textContent = order.state;
    document.getElementById("order-step-text").textContent = order.step;
    document.getElementById("order-step").hidden = !order.step;
    const approvals = document.getElementById("approvals");
    approvals.replaceChildren();
    for (const a of order.approvals) {
      const li = document.createElement("li");
      li.textContent = `${a.side}: ${a.state}` + (a.approver ? ` by ${a.approver}` : "") +
        (a.comment ? ` (${a.comment})` : "");
      approvals.appendChild(li);
    }
    replaceRows(document.getElementById("audit"),
      order.audit.map((e) => [e.time, e.actor, e.from, e.to, e.reason]));
    const failure = document.getElementById("order-failure");
    failure.textContent = order.failure;
    failure.hidden = !order.failure;
    if (order.circuit_state) {
      document.getElementById("circuit-state").textContent = order.circuit_state;
    }
    if (order.terminal) note.textContent = "(final)";
  });
  source.addEventListener("problem", (message) => {
    note.textContent = "(live updates stopped: " + JSON.parse(message.data) + ")";
  });
  // The server ends the stream when the order is final; do not let the browser reconnect.
  source.addEventListener("end", () => source.close());
}

function pollCircuit(section) {
  const note = document.getElementById("sync-note");
  async function refresh() {
    try {
      const response = await fetch(section.dataset.sync, {credentials: "same-origin"});
      const state = await response.json();
      if (state.problem) {
        note.textContent = "(" + state.problem + ")";
      } else {
        for (const [router, label] of Object.entries(state.routers)) {
          for (const badge of document.querySelectorAll(".sync-status")) {
            if (badge.dataset.router === router) badge.textContent = label;
          }
        }
        replaceRows(document.getElementById("log"), state.log);
        note.textContent = "(checked " + new Date().toLocaleTimeString() + ")";
      }
    } catch (error) {
      note.textContent = "(console unreachable, retrying)";
    }
    setTimeout(refresh, 2000);
  }
  setTimeout(refresh, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  const order = document.getElementById("order-live");
  if (order && order.dataset.terminal === "no") watchOrder(order);
  const circuit = document.getElementById("circuit-live");
  if (circuit) pollCircuit(circuit);
});

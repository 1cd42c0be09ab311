// Live floor: re-reads the API every 2 s and redraws machines and recent sessions.
const LABELS = { free: "Free", in_use: "In use", offline: "Offline", out_of_service: "Out of service" };

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function time(iso) { return new Date(iso).toISOString().slice(11, 19); }

function drawMachines(machines) {
  const list = document.getElementById("machines");
  list.replaceChildren(...machines.map((m) => {
    const li = document.createElement("li");
    li.className = `machine state-${m.state}`;
    li.dataset.machine = m.id;
    li.append(text("h3", m.name), text("p", LABELS[m.state] || m.state, "state"));
    if (m.current_session) {
      const who = m.current_session.member_name || m.current_session.member_id || "unknown member";
      const p = text("p", `${who} since ${time(m.current_session.started_at)} UTC `);
      if (m.current_session.busy) p.append(text("span", "busy", "busy"));
      li.append(p);
    } else if (m.out_of_service) {
      li.append(text("p", m.out_of_service_reason || ""));
    }
    return li;
  }));
}

function drawSessions(page) {
  const body = document.getElementById("sessions");
  body.replaceChildren(...page.items.map((s) => {
    const tr = document.createElement("tr");
    tr.append(
      text("td", s.machine_id), text("td", s.member_name || s.member_id || "?"),
      text("td", s.started_at.replace("T", " ").slice(0, 19)),
      text("td", `${Math.round(s.elapsed_seconds)} s`), text("td", `${Math.round(s.busy_seconds)} s`),
      text("td", s.end_reason || "running"));
    return tr;
  }));
}

async function refresh() {
  try {
    const [machines, sessions] = await Promise.all([
      fetch("/api/machines").then((r) => r.json()),
      fetch("/api/sessions?limit=15").then((r) => r.json()),
    ]);
    drawMachines(machines);
    drawSessions(sessions);
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  } catch (err) {
    document.getElementById("updated").textContent = "server unreachable";
  }
}

setInterval(refresh, 2000);

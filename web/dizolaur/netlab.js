// The network lab panel of the Dizolaur page: puts a network profile in
// force for "my connection" (this player's peer), "this room" or "everyone"
// through the admin API (/admin/netlab/..., docs/netlab.md), and shows what
// the lab injected there, live: in the panel and as two rows of the net-stats
// overlay, next to the RTT and loss the game measures.
//
// The admin API needs no token on a server listening on loopback (the
// default `rtcrelay serve`); elsewhere give the token in the panel or as
// `?admin_token=...` (kept in sessionStorage, sent as a Bearer token).
//
// initNetlab({ session, onApplied }) → the test hook (window.dizolaur.netlab):
//   session(): the GameSession or null; onApplied(): called after a setting
//   is put in force (the page shows its net-stats overlay).

const POLL_INTERVAL_MS = 1000;
const TOKEN_KEY = 'dizolaur.adminToken';
const SCOPE_LABELS = { peer: 'my connection', room: 'this room', global: 'everyone' };

const $ = (id) => document.getElementById(id);

export function initNetlab({ session, onApplied = () => {} }) {
  const els = {
    panel: $('netlab'), summary: $('nl-summary'), form: $('nl-form'), scope: $('nl-scope'), preset: $('nl-preset'),
    loss: $('nl-loss'), delay: $('nl-delay'), jitter: $('nl-jitter'), rate: $('nl-rate'), token: $('nl-token'),
    apply: $('nl-apply'), clear: $('nl-clear'), status: $('nl-status'), counters: $('nl-counters'),
    rowUp: $('ns-lab-row-up'), rowDown: $('ns-lab-row-down'), labUp: $('ns-lab-up'), labDown: $('ns-lab-down'),
  };

  /** What a test (or a curious console user) may look at. */
  const state = {
    /** Profile names from GET /admin/netlab. */
    presets: [],
    /** 'peer' | 'room' | 'global'. */
    scope: els.scope.value,
    /** The admin path of the scope, or null while it cannot be named (not joined). */
    path: null,
    /** What is in force at the scope (the API's answer), or null. */
    inForce: null,
    /** {up, down} injected counters at the scope, or null. */
    totals: null,
    /** The last error: {status, error, field, message}, or null. */
    error: null,
    /** Polls answered. */
    polls: 0,
  };

  const params = new URLSearchParams(location.search);
  const fromUrl = params.get('admin_token');
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    // Keep the token out of the address bar (and of shared links).
    params.delete('admin_token');
    const query = params.toString();
    history.replaceState(null, '', `${location.pathname}${query ? `?${query}` : ''}`);
  }
  els.token.value = sessionStorage.getItem(TOKEN_KEY) ?? '';

  let timer = null;
  let loaded = false;

  function scopePath(scope = state.scope) {
    if (scope === 'global') return '/admin/netlab/global';
    const s = session();
    if (!s) return null;
    if (scope === 'peer') return s.relay.peerId ? `/admin/netlab/peer/${encodeURIComponent(s.relay.peerId)}` : null;
    if (scope === 'room') return s.relay.room ? `/admin/netlab/room/${encodeURIComponent(s.relay.room)}` : null;
    return null;
  }

  async function call(method, path, body) {
    const headers = {};
    const token = els.token.value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let json = null;
    try {
      json = await response.json();
    } catch {
      // not JSON (e.g. no admin routes on this server)
    }
    return { status: response.status, ok: response.ok, json };
  }

  function apiError(status, json) {
    return {
      status,
      error: json?.error ?? 'http_error',
      field: json?.field ?? null,
      message: json?.message ?? `HTTP ${status}`,
    };
  }

  function setStatus(kind, text) {
    els.status.dataset.state = kind;
    els.status.textContent = text;
  }

  function showError(err) {
    state.error = err;
    const hint = err.status === 401 || err.status === 403 ? ' (admin token?)' : '';
    setStatus('error', `${err.status} ${err.error}${err.field ? ` [${err.field}]` : ''}: ${err.message}${hint}`);
  }

  function describe(inForce) {
    if (!inForce) return 'nothing set';
    const s = inForce.setting ?? {};
    let what = 'custom link';
    if (s.profile) what = s.profile;
    else if (inForce.scenario_name) what = `scenario ${inForce.scenario_name}`;
    else if (s.scenario) what = 'scenario';
    return what;
  }

  function fmtDir(c) {
    if (!c || !c.pushed) return '–';
    const pct = (100 * c.dropped) / c.pushed;
    return `${c.dropped}/${c.pushed} dropped (${pct.toFixed(1)} %) · +${c.mean_added_delay_ms.toFixed(0)} ms`;
  }

  function render() {
    const scopeName = SCOPE_LABELS[state.scope];
    els.summary.textContent = state.inForce ? `· ${scopeName}: ${describe(state.inForce)}` : '';
    const needsSession = state.scope !== 'global' && !state.path;
    els.apply.disabled = needsSession;
    els.clear.disabled = needsSession;
    if (needsSession && !state.error) setStatus('idle', `join a match to impair ${scopeName}`);
    else if (!state.error) setStatus(state.inForce ? 'on' : 'idle', `${scopeName}: ${describe(state.inForce)}`);
    const t = state.totals;
    const cells = [];
    for (const [dir, label] of [['up', 'up (you → server)'], ['down', 'down (server → you)']]) {
      const c = t?.[dir];
      const tr = document.createElement('tr');
      tr.dataset.dir = dir;
      const values = [label, c?.pushed ?? 0, c?.dropped ?? 0, c?.duplicated ?? 0, c?.reordered ?? 0,
        c ? `${c.mean_added_delay_ms.toFixed(0)} ms` : '–'];
      values.forEach((v, i) => {
        const td = document.createElement(i === 0 ? 'th' : 'td');
        td.textContent = String(v);
        if (i > 0) td.dataset.counter = ['pushed', 'dropped', 'duplicated', 'reordered', 'delay'][i - 1];
        tr.append(td);
      });
      cells.push(tr);
    }
    els.counters.tBodies[0].replaceChildren(...cells);
    els.counters.hidden = !state.inForce;
    // The net-stats overlay rows.
    els.rowUp.hidden = els.rowDown.hidden = !state.inForce;
    els.labUp.textContent = fmtDir(t?.up);
    els.labDown.textContent = fmtDir(t?.down);
  }

  async function loadOverview() {
    const { status, ok, json } = await call('GET', '/admin/netlab');
    if (!ok) {
      showError(apiError(status, json));
      return false;
    }
    state.presets = (json.profiles ?? []).map((p) => p.name);
    const current = els.preset.value;
    const options = [new Option('custom values', '')];
    for (const name of state.presets) options.push(new Option(name, name));
    els.preset.replaceChildren(...options);
    els.preset.value = state.presets.includes(current) ? current : (state.presets.includes('3g') ? '3g' : '');
    updateInputs();
    loaded = true;
    return true;
  }

  /** Reads the selected scope's setting and counters. */
  async function refresh() {
    state.scope = els.scope.value;
    state.path = scopePath();
    if (!loaded && !(await loadOverview())) {
      render();
      return state;
    }
    if (!state.path) {
      state.inForce = state.totals = null;
      render();
      return state;
    }
    const path = state.path;
    const { status, ok, json } = await call('GET', path);
    if (path !== state.path) return state; // the scope changed meanwhile
    if (ok || status === 404) {
      state.error = null;
      state.inForce = ok ? json : null;
      state.totals = ok ? json.totals : null;
    } else {
      showError(apiError(status, json));
    }
    state.polls++;
    render();
    return state;
  }

  /** The setting the form describes: a preset, or the custom values both ways. */
  function formSetting() {
    if (els.preset.value) return { profile: els.preset.value };
    const num = (el) => (el.value.trim() === '' ? 0 : Number(el.value));
    const dir = {};
    const loss = num(els.loss);
    const delay = Math.round(num(els.delay));
    const jitter = Math.round(num(els.jitter));
    const rate = Math.round(num(els.rate));
    if (loss) dir.loss = { model: 'random', p: loss / 100 };
    if (delay || jitter) dir.delay = { latency: `${delay}ms`, jitter: `${jitter}ms`, distribution: 'normal' };
    if (rate) dir.rate = { kbit_per_s: rate, overhead_bytes: 28 };
    return { link: { up: dir, down: structuredClone(dir) } };
  }

  /** PUTs `setting` (default: the form's) at the selected scope. */
  async function apply(setting = formSetting()) {
    await refresh();
    if (!state.path) throw new Error('join a match first');
    const { status, ok, json } = await call('PUT', state.path, setting);
    if (!ok) {
      showError(apiError(status, json));
      render();
      return state;
    }
    state.error = null;
    state.inForce = json;
    state.totals = json.totals;
    render();
    startPolling();
    onApplied();
    return state;
  }

  /** DELETEs the selected scope's setting. */
  async function clear() {
    await refresh();
    if (!state.path) return state;
    const { status, ok, json } = await call('DELETE', state.path);
    if (!ok && status !== 404) showError(apiError(status, json));
    else {
      state.error = null;
      state.inForce = state.totals = null;
    }
    render();
    return state;
  }

  function startPolling() {
    if (timer) return;
    timer = setInterval(() => {
      // Poll while the panel is open or something is in force here.
      if (!els.panel.open && !state.inForce) {
        clearInterval(timer);
        timer = null;
        return;
      }
      refresh().catch((e) => showError({ status: 0, error: 'network', field: null, message: String(e) }));
    }, POLL_INTERVAL_MS);
  }

  function updateInputs() {
    const custom = !els.preset.value;
    for (const el of [els.loss, els.delay, els.jitter, els.rate]) el.disabled = !custom;
  }

  els.panel.addEventListener('toggle', () => {
    if (!els.panel.open) return;
    refresh().catch(() => {});
    startPolling();
  });
  els.scope.addEventListener('change', () => {
    state.error = null;
    state.inForce = state.totals = null;
    refresh().catch(() => {});
  });
  els.preset.addEventListener('change', updateInputs);
  els.token.addEventListener('change', () => {
    const token = els.token.value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    loaded = false;
    state.error = null;
    refresh().catch(() => {});
  });
  els.form.addEventListener('submit', (event) => {
    event.preventDefault();
    apply().catch((e) => showError({ status: 0, error: 'error', field: null, message: e.message }));
  });
  els.clear.addEventListener('click', () => {
    clear().catch((e) => showError({ status: 0, error: 'error', field: null, message: e.message }));
  });

  updateInputs();
  render();
  return { state, refresh, apply, clear, formSetting };
}

// The crusades dashboard: one page, hash routing, no framework and nothing from a CDN.
//
//   #/                      the leaderboard of the selected (default: the latest) competition
//   #/?competition=C        the same for competition C
//   #/evaluation/ID         one evaluation: its summary, gates and per-op profile
//
// Every text that comes from the API is inserted as a text node (never as HTML), and the page
// runs under `Content-Security-Policy: default-src 'self'`: no inline script or style.
'use strict';

(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const app = document.getElementById('app');
  const picker = document.getElementById('competition');
  const blockLabel = document.getElementById('block');

  // ---------------------------------------------------------------- DOM helpers

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  /** An HTML element; string children become text nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    return append(el, children);
  }

  /** An SVG element. */
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    return append(el, children);
  }

  // ---------------------------------------------------------------- formatting

  const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
  const pct = (x, digits = 2) => (isNum(x) ? `${(x * 100).toFixed(digits)}%` : '—');
  const shortSha = (sha) => (sha ? sha.slice(0, 12) : '—');
  const grouped = (x, digits = 0) =>
    isNum(x)
      ? x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
      : '—';

  /** 2026-12-06T22:41:03Z → "2026-12-06 22:41 UTC" (UTC, so every reader sees the same). */
  function when(iso) {
    const t = Date.parse(iso);
    if (!Number.isFinite(t)) return iso || '—';
    return `${new Date(t).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  }

  /** Seconds with a unit that keeps 3 significant digits. */
  function duration(sec) {
    if (!isNum(sec)) return '—';
    if (sec >= 1) return `${sec.toFixed(2)} s`;
    if (sec >= 1e-3) return `${(sec * 1e3).toFixed(1)} ms`;
    return `${(sec * 1e6).toFixed(0)} µs`;
  }

  /** 1.23e12 → "1.23 T". */
  function si(x, digits = 2) {
    if (!isNum(x)) return '—';
    const units = [[1e15, 'P'], [1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
    for (const [scale, unit] of units) if (Math.abs(x) >= scale) return `${(x / scale).toFixed(digits)} ${unit}`;
    return x.toFixed(0);
  }

  /** A gate's value, as the CLI prints it. */
  function gateValue(x) {
    if (x === null || x === undefined) return 'NaN';
    if (!isNum(x)) return String(x);
    return Math.abs(x) >= 1e6 ? x.toExponential(3) : x.toFixed(4);
  }

  const COMPARISON = { '<=': '≤', '>=': '≥', '==': '=' };

  function verdictBadge(verdict) {
    const v = verdict === 'accepted' ? 'accepted' : verdict === 'rejected' ? 'rejected' : 'unknown';
    return h('span', { class: `badge verdict ${v}` }, verdict || 'unknown');
  }

  function sha(full, { link } = {}) {
    const text = h('code', { class: 'sha', title: full, 'data-sha': full }, shortSha(full));
    return link ? h('a', { href: link, class: 'sha-link' }, text) : text;
  }

  function who(hotkey, uid) {
    const parts = [];
    if (uid !== null && uid !== undefined) parts.push(h('span', { class: 'uid' }, `uid ${uid}`));
    if (hotkey) {
      const label = hotkey.length > 14 ? `${hotkey.slice(0, 6)}…${hotkey.slice(-4)}` : hotkey;
      parts.push(h('span', { class: 'hotkey', title: hotkey }, label));
    }
    return parts.length ? parts : h('span', { class: 'muted' }, 'local');
  }

  // ---------------------------------------------------------------- API

  async function api(path) {
    let res;
    try {
      res = await fetch(path, { headers: { Accept: 'application/json' } });
    } catch (e) {
      throw new Error(`cannot reach the server (${e.message})`);
    }
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = null;
    }
    if (!res.ok) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
    return body;
  }

  const q = (params) =>
    Object.entries(params)
      .filter(([, v]) => v !== undefined && v !== null && v !== '')
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
      .join('&');

  // ---------------------------------------------------------------- routing

  function parseRoute() {
    const hash = location.hash.replace(/^#/, '') || '/';
    const [path, query] = hash.split('?');
    const params = new URLSearchParams(query || '');
    const m = path.match(/^\/evaluation\/(\d+)$/);
    if (m) return { view: 'evaluation', id: m[1], params };
    return { view: 'board', params };
  }

  let current = 0; // the latest render: an older one that finishes late is dropped
  let selected = null; // the competition shown

  async function route() {
    const token = ++current;
    const r = parseRoute();
    try {
      const view = r.view === 'evaluation' ? await evaluationView(r.id) : await boardView(r.params);
      if (token !== current) return;
      app.replaceChildren(view);
      document.body.dataset.view = r.view;
      window.scrollTo(0, 0);
    } catch (e) {
      if (token !== current) return;
      app.replaceChildren(
        h('section', { class: 'card error', role: 'alert' },
          h('h2', null, 'Something went wrong'),
          h('p', null, e.message),
          h('p', null, h('a', { href: '#/' }, '← back to the leaderboard'))),
      );
      document.body.dataset.view = 'error';
    }
  }

  window.addEventListener('hashchange', route);
  picker.addEventListener('change', () => {
    location.hash = `#/?${q({ competition: picker.value })}`;
  });

  async function competitions() {
    const data = await api('/api/competitions');
    picker.replaceChildren(
      ...data.competitions.map((c) =>
        h('option', { value: c.competition }, `${c.competition} (${c.evaluations})`)),
    );
    picker.disabled = data.competitions.length === 0;
    return data;
  }

  // ---------------------------------------------------------------- the leaderboard view

  async function boardView(params) {
    const comps = await competitions();
    if (comps.competitions.length === 0) {
      blockLabel.textContent = `block ${grouped(comps.block)}`;
      return h('section', { class: 'card empty-state' },
        h('h2', null, 'No evaluations yet'),
        h('p', null, 'The store holds no evaluation. Add some with ',
          h('code', null, 'crusades results import RECORD.json'), ' or run a validator.'));
    }
    const competition = params.get('competition') || selected || comps.default;
    selected = competition;
    picker.value = competition;
    const block = params.get('block');
    const [board, history, evals] = await Promise.all([
      api(`/api/leaderboard?${q({ competition, block })}`),
      api(`/api/history?${q({ competition })}`),
      api(`/api/evaluations?${q({ competition, limit: 500 })}`),
    ]);
    blockLabel.textContent = `block ${grouped(board.block)}`;

    // Each submission's newest evaluation, for the links from the leaderboard.
    const newest = new Map();
    for (const e of evals.evaluations) if (!newest.has(e.sha256)) newest.set(e.sha256, e.id);

    return h('div', { class: 'board' },
      summaryCards(board, evals.evaluations),
      h('section', { class: 'card', 'aria-labelledby': 'chart-h' },
        h('div', { class: 'card-head' },
          h('h2', { id: 'chart-h' }, 'MFU over time'),
          chartLegend()),
        h('div', { id: 'mfu-chart', class: 'chart' }, mfuChart(history, board))),
      h('section', { class: 'card', 'aria-labelledby': 'board-h' },
        h('div', { class: 'card-head' },
          h('h2', { id: 'board-h' }, 'Leaderboard'),
          h('span', { class: 'muted' }, 'ranked by the median MFU of accepted evaluations')),
        leaderboardTable(board, newest)),
      h('section', { class: 'card', 'aria-labelledby': 'evals-h' },
        h('div', { class: 'card-head' },
          h('h2', { id: 'evals-h' }, 'Recent evaluations'),
          h('span', { class: 'muted' }, `${evals.evaluations.length} shown`)),
        evaluationsTable(evals.evaluations.slice(0, 25))));
  }

  function summaryCards(board, evaluations) {
    const leader = board.leader;
    const accepted = evaluations.filter((e) => e.verdict === 'accepted').length;
    const toBeat = h('div', { class: 'stat primary' },
      h('div', { class: 'stat-label' }, 'MFU to beat'),
      h('div', { id: 'to-beat', class: 'stat-value' }, leader ? pct(board.to_beat) : 'any accepted score'),
      h('div', { class: 'stat-note' },
        leader
          ? [`leader ${pct(leader.score)} × (1 + T), T = `, h('strong', { id: 'threshold' }, pct(board.threshold, 1))]
          : ['no leader yet · T = ', h('strong', { id: 'threshold' }, pct(board.threshold, 1))]));
    const leaderCard = h('div', { class: 'stat' },
      h('div', { class: 'stat-label' }, 'Leader'),
      h('div', { class: 'stat-value' }, leader ? pct(leader.score) : '—'),
      h('div', { class: 'stat-note' },
        leader ? [sha(leader.sha256), ` · crowned ${when(leader.crowned_at)}`] : 'no accepted evaluation yet'));
    const evalCard = h('div', { class: 'stat' },
      h('div', { class: 'stat-label' }, 'Evaluations'),
      h('div', { class: 'stat-value' }, grouped(evaluations.length)),
      h('div', { class: 'stat-note' },
        `${accepted} accepted · ${evaluations.length - accepted} rejected · ${board.standings.length} ranked`));
    return h('section', { class: 'stats', 'aria-label': 'Summary' },
      toBeat, leaderCard, weightsCard(board.weights, board.weights_rule), evalCard);
  }

  function weightsCard(w, rule) {
    const burnUid = rule ? rule.burn_uid : null;
    const rows = [];
    if (w && Array.isArray(w.uids)) {
      w.uids.forEach((uid, i) => {
        const weight = w.weights[i];
        const bar = h('span', { class: 'wbar-fill' });
        bar.style.width = `${Math.max(0, Math.min(1, weight)) * 100}%`;
        rows.push(h('li', null,
          h('span', { class: 'wuid' }, uid === burnUid ? `uid ${uid} (burn)` : `uid ${uid}`),
          h('span', { class: 'wbar' }, bar),
          h('span', { class: 'wval' }, pct(weight, 1))));
      });
    }
    return h('div', { class: 'stat', id: 'weights' },
      h('div', { class: 'stat-label' }, 'Weights'),
      rows.length ? h('ul', { class: 'wlist', 'aria-label': 'weight vector' }, rows) : h('div', { class: 'stat-note' }, 'none'),
      w && w.note ? h('div', { class: 'stat-note wnote', title: w.note }, w.note) : null);
  }

  function leaderboardTable(board, newest) {
    if (board.standings.length === 0) {
      return h('p', { class: 'empty', id: 'leaderboard' }, 'No accepted evaluation in this competition yet.');
    }
    const head = ['#', 'Submission', 'Miner', 'Median MFU', 'Evaluations', 'Range', 'First seen'];
    return h('div', { class: 'table-wrap' },
      h('table', { id: 'leaderboard', class: 'grid-table' },
        h('caption', { class: 'sr-only' }, `Leaderboard of ${board.competition} at block ${board.block}`),
        h('thead', null, h('tr', null, head.map((t, i) => h('th', { scope: 'col', class: i >= 3 && i <= 5 ? 'num' : null }, t)))),
        h('tbody', null, board.standings.map((st) => {
          const id = newest.get(st.sha256);
          return h('tr', { class: st.leader ? 'leader' : null, 'data-sha': st.sha256 },
            h('td', { class: 'rank' }, String(st.rank)),
            h('td', null, sha(st.sha256, { link: id !== undefined ? `#/evaluation/${id}` : null }),
              st.leader ? h('span', { class: 'badge crown', title: 'the current leader' }, 'leader') : null),
            h('td', null, who(st.hotkey, st.uid)),
            h('td', { class: 'num strong' }, pct(st.score)),
            h('td', { class: 'num' }, `${st.accepted}/${st.evaluations}`),
            h('td', { class: 'num muted' }, `${pct(st.score_min)} – ${pct(st.score_max)}`),
            h('td', { class: 'muted' }, when(st.first_seen_at), h('span', { class: 'block-no' }, ` · #${st.first_seen_block}`)));
        }))));
  }

  function evaluationsTable(rows) {
    if (rows.length === 0) return h('p', { class: 'empty', id: 'evaluations' }, 'No evaluation yet.');
    return h('div', { class: 'table-wrap' },
      h('table', { id: 'evaluations', class: 'grid-table' },
        h('caption', { class: 'sr-only' }, 'The newest evaluations'),
        h('thead', null, h('tr', null,
          ['#', 'When', 'Submission', 'Verdict', 'MFU', 'Device', 'Miner'].map((t) =>
            h('th', { scope: 'col', class: t === 'MFU' ? 'num' : null }, t)))),
        h('tbody', null, rows.map((e) =>
          h('tr', null,
            h('td', null, h('a', { href: `#/evaluation/${e.id}` }, `#${e.id}`)),
            h('td', { class: 'muted' }, when(e.created_at)),
            h('td', null, sha(e.sha256, { link: `#/evaluation/${e.id}` })),
            h('td', null, verdictBadge(e.verdict),
              e.error_code ? h('code', { class: 'code' }, e.error_code) : null),
            h('td', { class: 'num' }, pct(e.score)),
            h('td', { class: 'muted' }, e.device),
            h('td', null, who(e.hotkey, e.uid)))))));
  }

  // ---------------------------------------------------------------- the MFU chart (SVG)

  function chartLegend() {
    const item = (cls, label) => h('span', { class: 'legend-item' }, h('span', { class: `swatch ${cls}` }), label);
    return h('div', { class: 'legend', 'aria-hidden': 'true' },
      item('sw-point', 'accepted evaluation'),
      item('sw-leader-point', 'the leader\'s'),
      item('sw-leader', 'leader'),
      item('sw-to-beat', 'to beat'));
  }

  /** Round numbers for an axis from 0 to max: [step, ticks]. */
  function niceTicks(max, count = 5) {
    if (!(max > 0)) max = 1;
    const raw = max / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw);
    const ticks = [];
    for (let v = 0; v <= max + step * 1e-9; v += step) ticks.push(+v.toFixed(12));
    if (ticks[ticks.length - 1] < max) ticks.push(ticks[ticks.length - 1] + step);
    return ticks;
  }

  function median(values) {
    const v = [...values].sort((a, b) => a - b);
    const m = v.length >> 1;
    return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  }

  function timeTicks(t0, t1) {
    const MIN = 60e3, HOUR = 60 * MIN, DAY = 24 * HOUR;
    const steps = [MIN, 5 * MIN, 15 * MIN, 30 * MIN, HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 91 * DAY, 365 * DAY];
    const step = steps.find((st) => (t1 - t0) / st <= 6) || steps[steps.length - 1];
    const ticks = [];
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) ticks.push(t);
    const iso = (t) => new Date(t).toISOString();
    const fmt = step < DAY
      ? (t) => (t % DAY === 0 ? iso(t).slice(5, 10) : iso(t).slice(11, 16))
      : (t) => iso(t).slice(0, 10);
    return ticks.map((t) => ({ t, label: fmt(t) }));
  }

  function mfuChart(history, board) {
    const points = history.points
      .map((p) => ({ ...p, t: Date.parse(p.created_at) }))
      .filter((p) => Number.isFinite(p.t) && isNum(p.score));
    const changes = history.leader_changes
      .map((c) => ({ ...c, t: Date.parse(c.at) }))
      .filter((c) => Number.isFinite(c.t) && isNum(c.score))
      .sort((a, b) => a.t - b.t);
    if (points.length === 0) {
      return h('p', { class: 'empty' }, 'No accepted evaluation yet: nothing to chart.');
    }

    const W = 920, H = 320, M = { l: 60, r: 24, t: 18, b: 44 };
    const iw = W - M.l - M.r, ih = H - M.t - M.b;
    const times = points.map((p) => p.t).concat(changes.map((c) => c.t));
    let t0 = Math.min(...times), t1 = Math.max(...times);
    if (t1 - t0 < 10 * 60e3) { t0 -= 30 * 60e3; t1 += 30 * 60e3; }
    const pad = (t1 - t0) * 0.04;
    t0 -= pad; t1 += pad;
    const ys = points.map((p) => p.score).concat(changes.map((c) => c.score));
    if (isNum(board.to_beat)) ys.push(board.to_beat);
    if (board.leader && isNum(board.leader.score)) ys.push(board.leader.score);
    const yTicks = niceTicks(Math.max(...ys) * 1.08);
    const yMax = yTicks[yTicks.length - 1];
    const x = (t) => M.l + ((t - t0) / (t1 - t0)) * iw;
    const y = (v) => M.t + ih - (v / yMax) * ih;
    const f1 = (v) => v.toFixed(1);

    const leaderSha = board.leader ? board.leader.sha256 : null;
    const best = Math.max(...points.map((p) => p.score));
    const svg = s('svg', {
      viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'mfu-title mfu-desc',
      preserveAspectRatio: 'xMidYMid meet', class: 'mfu-svg',
    },
    s('title', { id: 'mfu-title' }, `MFU over time, ${board.competition}`),
    s('desc', { id: 'mfu-desc' },
      `${points.length} accepted evaluations; best ${pct(best)}; ` +
      (leaderSha ? `leader ${shortSha(leaderSha)} at ${pct(board.leader.score)}, to beat ${pct(board.to_beat)}.` : 'no leader.')));

    // Grid and axes.
    const grid = s('g', { class: 'grid' });
    for (const v of yTicks) {
      grid.append(s('line', { x1: M.l, x2: W - M.r, y1: f1(y(v)), y2: f1(y(v)) }));
      svg.append(s('text', { x: M.l - 8, y: f1(y(v)), class: 'tick tick-y', 'text-anchor': 'end', 'dominant-baseline': 'middle' },
        `${+(v * 100).toFixed(2)}%`));
    }
    const xt = timeTicks(t0, t1);
    for (const { t, label } of xt) {
      grid.append(s('line', { x1: f1(x(t)), x2: f1(x(t)), y1: M.t, y2: M.t + ih, class: 'vgrid' }));
      svg.append(s('text', { x: f1(x(t)), y: M.t + ih + 18, class: 'tick tick-x', 'text-anchor': 'middle' }, label));
    }
    svg.insertBefore(grid, svg.children[2] || null);
    svg.append(
      s('line', { x1: M.l, x2: M.l, y1: M.t, y2: M.t + ih, class: 'axis' }),
      s('line', { x1: M.l, x2: W - M.r, y1: M.t + ih, y2: M.t + ih, class: 'axis' }),
      s('text', { x: 14, y: M.t + ih / 2, class: 'axis-title', 'text-anchor': 'middle', transform: `rotate(-90 14 ${M.t + ih / 2})` }, 'MFU (median of runs)'),
      s('text', { x: M.l + iw / 2, y: H - 6, class: 'axis-title', 'text-anchor': 'middle' }, 'time (UTC)'));

    // The leader's score: a step line that follows the leader's median as its accepted
    // evaluations come in, and steps at each change of leader.
    if (changes.length) {
      const events = points.map((p) => ({ t: p.t, point: p }))
        .concat(changes.map((c) => ({ t: c.t, change: c })))
        .sort((a, b) => a.t - b.t || (a.point ? -1 : 1));
      const seen = new Map();
      let lead = null, level = null, d = '';
      for (const ev of events) {
        let next = level;
        if (ev.point) {
          const list = seen.get(ev.point.sha256) || [];
          list.push(ev.point.score);
          seen.set(ev.point.sha256, list);
          if (ev.point.sha256 === lead) next = median(list);
        } else {
          lead = ev.change.sha256;
          next = ev.change.score;
        }
        if (level === null) d = `M${f1(x(ev.t))},${f1(y(next))}`;
        else if (next !== level) d += `H${f1(x(ev.t))}V${f1(y(next))}`;
        level = next;
      }
      d += `H${f1(x(t1))}`;
      svg.append(s('path', { d, class: 'leader-line', fill: 'none' },
        s('title', null, 'the leader\'s score: the median of its accepted evaluations')));
    }

    // The score to beat.
    if (leaderSha && isNum(board.to_beat)) {
      const yb = f1(y(board.to_beat));
      svg.append(
        s('line', { x1: M.l, x2: W - M.r, y1: yb, y2: yb, class: 'to-beat-line' },
          s('title', null, `to beat: ${pct(board.to_beat)}`)),
        s('text', { x: M.l + 8, y: yb - 6, class: 'to-beat-label', 'text-anchor': 'start' }, `to beat ${pct(board.to_beat)}`));
    }

    // One point per accepted evaluation.
    const dots = s('g', { class: 'points' });
    for (const p of points) {
      const lead = p.sha256 === leaderSha;
      const dot = s('circle', {
        cx: f1(x(p.t)), cy: f1(y(p.score)), r: lead ? 5.5 : 4.5,
        class: lead ? 'point leader-point' : 'point', 'data-sha': p.sha256,
      }, s('title', null, `${shortSha(p.sha256)} · ${pct(p.score)} · ${when(p.created_at)}${p.id !== undefined ? ` · evaluation #${p.id}` : ''}`));
      if (p.id !== undefined) {
        const a = s('a', { href: `#/evaluation/${p.id}`, 'aria-label': `evaluation ${p.id}: ${pct(p.score)}` }, dot);
        dots.append(a);
      } else {
        dots.append(dot);
      }
    }
    svg.append(dots);
    return svg;
  }

  // ---------------------------------------------------------------- the evaluation view

  async function evaluationView(id) {
    const data = await api(`/api/evaluations/${encodeURIComponent(id)}`);
    const row = data.evaluation;
    const rec = data.record;
    const score = rec.score || {};
    blockLabel.textContent = row.block !== null && row.block !== undefined ? `block ${grouped(row.block)}` : '';
    const dl = (pairs) => h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
    const passed = rec.gates.filter((g) => g.passed).length;

    return h('div', { class: 'evaluation' },
      h('p', { class: 'crumbs' },
        h('a', { href: `#/?${q({ competition: row.competition })}` }, '← leaderboard'), ` · ${row.competition}`),
      h('section', { class: 'card', id: 'summary', 'aria-labelledby': 'summary-h' },
        h('div', { class: 'card-head' },
          h('h2', { id: 'summary-h' }, `Evaluation #${row.id}`),
          verdictBadge(row.verdict),
          row.error_code ? h('code', { class: 'code' }, row.error_code) : null),
        h('div', { class: 'summary-grid' },
          dl([
            ['Submission', h('code', { class: 'sha full', 'data-sha': row.sha256 }, row.sha256)],
            ['Size', `${grouped(rec.submission.bytes)} bytes (code not served)`],
            ['Miner', who(row.hotkey, row.uid)],
            rec.failure ? ['Failure', `${rec.failure.run}: ${rec.failure.message}`] : null,
            ['Evaluated', `${when(row.created_at)}${row.block !== null && row.block !== undefined ? ` · block ${row.block}` : ''}`],
            row.validator ? ['Validator', row.validator] : null,
          ]),
          dl([
            ['MFU', [h('strong', { class: 'big' }, pct(score.mfu)),
              row.verdict === 'rejected' ? h('span', { class: 'muted' }, ' measured, not ranked') : null]],
            ['Range', isNum(score.mfu_min) ? `${pct(score.mfu_min)} – ${pct(score.mfu_max)} · cv ${pct(score.mfu_cv, 1)} · ${score.runs} runs` : '—'],
            ['MFU Crusades · HFU', `${pct(score.mfu_crusades)} · ${pct(score.hfu)}`],
            ['Throughput', isNum(score.tokens_per_s) ? `${grouped(score.tokens_per_s)} tokens/s` : '—'],
            ['Time', isNum(score.wall_s) ? `${duration(score.wall_s)} median run` : '—'],
          ]),
          dl([
            ['Hardware', row.hardware],
            ['Peak', `${si(rec.peak.flops_per_s)}FLOP/s · ${rec.peak.source}`],
            ['Workload', [`${row.preset} · ${row.device} · `, h('code', { title: row.workload_hash }, row.workload_hash.slice(0, 16))]],
            ['Harness', `${row.harness_version}${rec.harness.git_revision ? ` (${rec.harness.git_revision.slice(0, 12)})` : ''} · contract ${rec.harness.contract_version}`],
          ]))),
      h('section', { class: 'card', 'aria-labelledby': 'gates-h' },
        h('div', { class: 'card-head' },
          h('h2', { id: 'gates-h' }, 'Verification gates'),
          h('span', { class: 'muted' }, `${passed} of ${rec.gates.length} passed`)),
        gatesTable(rec.gates)),
      h('section', { class: 'card', 'aria-labelledby': 'profile-h' },
        h('div', { class: 'card-head' },
          h('h2', { id: 'profile-h' }, 'Where the time goes'),
          h('span', { class: 'muted' }, 'per-op profile of the median timed run')),
        opProfile(rec.profile)));
  }

  function gatesTable(gates) {
    if (!gates.length) return h('p', { class: 'empty', id: 'gates' }, 'No gate was evaluated (a run did not complete).');
    return h('div', { class: 'table-wrap' },
      h('table', { id: 'gates', class: 'grid-table' },
        h('caption', { class: 'sr-only' }, 'Verification gates, in precedence order'),
        h('thead', null, h('tr', null,
          h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Passed')),
          ['Gate', 'Value', '', 'Threshold', 'What is measured'].map((t, i) =>
            h('th', { scope: 'col', class: i >= 1 && i <= 3 ? 'num' : null }, t)))),
        h('tbody', null, gates.map((g) =>
          h('tr', { class: g.passed ? 'passed' : 'failed' },
            h('td', { class: 'mark' }, h('span', { 'aria-label': g.passed ? 'passed' : 'failed', role: 'img' }, g.passed ? '✓' : '✗')),
            h('td', null, h('code', null, g.code)),
            h('td', { class: 'num' }, gateValue(g.value)),
            h('td', { class: 'num cmp' }, COMPARISON[g.comparison] || g.comparison),
            h('td', { class: 'num' }, gateValue(g.threshold).replace(/\.?0+$/, '') || '0'),
            h('td', { class: 'measure', title: g.detail || '' }, g.measure,
              g.detail ? h('span', { class: 'detail' }, ` · ${g.detail}`) : null))))));
  }

  function opProfile(profile) {
    if (!profile || !profile.ops || !profile.ops.length) {
      return h('p', { class: 'empty', id: 'op-profile' }, 'No profile: no timed run completed.');
    }
    const total = profile.total_seconds > 0 ? profile.total_seconds : profile.ops.reduce((a, o) => a + o.seconds, 0);
    const ops = [...profile.ops].sort((a, b) => b.seconds - a.seconds);
    const top = ops.slice(0, 15);
    const max = top[0].seconds || 1;
    const rest = ops.length - top.length;
    return h('div', { id: 'op-profile', class: 'profile', role: 'list', 'aria-label': 'time share per op' },
      h('div', { class: 'profile-head', 'aria-hidden': 'true' },
        h('span', null, 'op'), h('span', null, 'share of op time'), h('span', { class: 'num' }, 'share'), h('span', { class: 'num' }, 'time'),
        h('span', { class: 'num' }, 'calls'), h('span', { class: 'num' }, 'FLOP/s')),
      top.map((o) => {
        const share = total > 0 ? o.seconds / total : 0;
        const fill = h('span', { class: 'bar-fill' });
        fill.style.width = `${((o.seconds / max) * 100).toFixed(2)}%`;
        return h('div', { class: 'bar', role: 'listitem', 'aria-label': `${o.op}: ${pct(share, 1)} of op time` },
          h('code', { class: 'bar-op', title: o.op }, o.op),
          h('span', { class: 'bar-track' }, fill),
          h('span', { class: 'num strong' }, pct(share, 1)),
          h('span', { class: 'num' }, duration(o.seconds)),
          h('span', { class: 'num muted' }, grouped(o.calls)),
          h('span', { class: 'num muted' }, o.flops > 0 && o.seconds > 0 ? si(o.flops / o.seconds) : '—'));
      }),
      rest > 0 ? h('p', { class: 'muted more' }, `… ${rest} more ops (the full profile is in /api/evaluations/ID)`) : null,
      h('p', { class: 'muted more' },
        `${grouped(profile.total_calls)} calls · ${duration(profile.total_seconds)} in ops · ${si(profile.total_flops)}FLOP executed`));
  }

  route();
})();

// The cascache dashboard: fetches /_cascache/dashboard and draws it. No build step; Chart.js is the
// global `Chart` from /dashboard/chart.umd.min.js. Every value from the store goes into the page as
// text (never as markup), and every figure keeps its raw number in `data-value`.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'cascache-dashboard-token';

  /** Bytes as the CLI prints them (powers of 1000). */
  function bytes(n) {
    if (n < 1000) return `${n} B`;
    const units = ['kB', 'MB', 'GB', 'TB'];
    let v = n;
    let i = -1;
    do {
      v /= 1000;
      i++;
    } while (v >= 1000 && i < units.length - 1);
    return `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
  }
  const seconds = (ms) => (ms === null || ms === undefined ? '–' : ms >= 60000 ? `${(ms / 60000).toFixed(1)} min` : `${(ms / 1000).toFixed(1)} s`);
  const percent = (x) => `${(x * 100).toFixed(1)}%`;
  function age(ms, now) {
    const s = Math.max(0, Math.round((now - ms) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  /** Sets an element's text and the raw value it shows. */
  function show(el, text, value) {
    el.textContent = text;
    if (value !== undefined && value !== null) el.dataset.value = String(value);
  }

  /** Fills a table: header cells, then rows of [text, raw value?, class?] cells. */
  function table(el, head, rows, empty) {
    el.replaceChildren();
    const thead = el.createTHead().insertRow();
    for (const h of head) {
      const th = document.createElement('th');
      th.textContent = h;
      thead.appendChild(th);
    }
    const body = el.createTBody();
    if (rows.length === 0) {
      const td = body.insertRow().insertCell();
      td.colSpan = head.length;
      td.className = 'empty';
      td.textContent = empty;
      return;
    }
    for (const row of rows) {
      const tr = body.insertRow();
      for (const cell of row) {
        const [text, value, cls] = Array.isArray(cell) ? cell : [cell];
        const td = tr.insertCell();
        show(td, String(text), value);
        if (cls) td.className = cls;
      }
    }
  }

  const charts = [];
  function render(d) {
    const now = d.generatedAt;
    show($('where'), `${d.storeDir} · signing: ${d.signing} · ${new Date(now).toLocaleString()}`);

    // Tiles: over every tool, as `cascache stats` counts them.
    let hits = 0;
    let local = 0;
    let misses = 0;
    let saved = 0;
    for (const t of d.tools) {
      hits += t.hits;
      local += t.localHits;
      misses += t.misses;
      saved += t.savedMs ?? 0;
    }
    const looked = hits + local + misses;
    const rate = looked > 0 ? (hits + local) / looked : 0;
    show($('hit-rate'), looked > 0 ? percent(rate) : '–', rate);
    show($('hit-rate-sub'), `${hits} from cascache, ${local} from the tools' own caches, ${misses} built`);
    show($('saved'), seconds(saved), saved);
    const s = d.store;
    show($('stored'), bytes(s.storedBytes), s.storedBytes);
    show($('stored-sub'), `for ${bytes(s.logicalBytes)} of outputs: dedup ${s.dedupRatio}x, compression ${s.compressionRatio}x`);
    show($('entries'), String(s.acEntries), s.acEntries);
    show($('entries-sub'), `${s.blobs} blobs, ${s.roots} named trees`);

    table(
      $('tools'),
      ['tool', 'runs', 'from cascache', "tool's own cache", 'built', 'hit rate', 'task time saved'],
      d.tools.map((t) => [t.tool, [t.runs, t.runs], [t.hits, t.hits, 'ok'], [t.localHits, t.localHits], [t.misses, t.misses, t.misses ? 'bad' : ''], [percent(t.hitRate), t.hitRate], [seconds(t.savedMs), t.savedMs]]),
      'no runs recorded yet',
    );
    table(
      $('runs'),
      ['tool', 'started', 'took', 'tasks', 'from cascache', "tool's own cache", 'built', 'task time saved'],
      d.runs.slice(0, 15).map((r) => [r.tool, [age(r.startTime, now), r.startTime], [seconds(r.durationMs), r.durationMs], [r.tasks, r.tasks], [r.hits, r.hits, 'ok'], [r.localHits, r.localHits], [r.misses, r.misses, r.misses ? 'bad' : ''], [seconds(r.savedMs), r.savedMs]]),
      'no runs recorded yet',
    );
    table(
      $('misses'),
      ['task', 'tool', 'built', 'of lookups', 'last built'],
      d.topMisses.map((t) => [t.task, t.tool, [t.misses, t.misses, 'bad'], [t.lookups, t.lookups], [age(t.lastMiss, now), t.lastMiss]]),
      'no task has missed',
    );
    table(
      $('tiers'),
      ['tier', 'state', 'pending uploads', 'set aside', 'oldest pending'],
      d.tiers.map((t) => [
        t.tier,
        t.breakerOpen === null ? ['not in use', ''] : t.breakerOpen ? ['skipped after failures', 'open', 'bad'] : ['reachable', 'closed', 'ok'],
        [t.pending, t.pending, t.pending ? 'bad' : ''],
        [t.setAside, t.setAside, t.setAside ? 'bad' : ''],
        [t.pending ? seconds(t.oldestAgeSeconds * 1000) : '–', t.oldestAgeSeconds],
      ]),
      'none: this store is local only',
    );

    // Charts: oldest run first.
    for (const c of charts.splice(0)) c.destroy();
    const runs = [...d.runs].reverse();
    const labels = runs.map((r) => new Date(r.startTime).toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }));
    charts.push(
      new Chart($('runs-chart'), {
        data: {
          labels,
          datasets: [
            { type: 'line', label: 'served from cache (%)', data: runs.map((r) => (r.hits + r.localHits + r.misses > 0 ? (100 * (r.hits + r.localHits)) / (r.hits + r.localHits + r.misses) : null)), borderColor: '#1a7f52', backgroundColor: '#1a7f52', yAxisID: 'rate', tension: 0 },
            { type: 'bar', label: 'task time saved (s)', data: runs.map((r) => (r.savedMs ?? 0) / 1000), backgroundColor: 'rgba(36, 86, 199, 0.35)', yAxisID: 'saved' },
          ],
        },
        options: {
          maintainAspectRatio: false,
          animation: false,
          interaction: { mode: 'index', intersect: false },
          scales: {
            rate: { position: 'left', min: 0, max: 100, title: { display: true, text: '% of tasks' } },
            saved: { position: 'right', beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: 'seconds saved' } },
          },
        },
      }),
      new Chart($('bytes-chart'), {
        type: 'bar',
        data: {
          labels: ['outputs (logical)', 'after dedup', 'on disk'],
          datasets: [{ label: 'bytes', data: [s.logicalBytes, s.uniqueBytes, s.storedBytes], backgroundColor: ['#9aa5b8', '#6d8fd8', '#2456c7'] }],
        },
        options: {
          indexAxis: 'y',
          maintainAspectRatio: false,
          animation: false,
          plugins: { legend: { display: false }, tooltip: { callbacks: { label: (ctx) => bytes(ctx.parsed.x) } } },
          scales: { x: { beginAtZero: true, ticks: { callback: (v) => bytes(v) } } },
        },
      }),
    );
  }

  async function load() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const res = await fetch('/_cascache/dashboard', { headers: token ? { authorization: `Bearer ${token}` } : {} });
    if (res.status === 401 || res.status === 403) {
      $('token').hidden = false;
      $('content').hidden = true;
      $('where').textContent = token ? 'that token was refused' : 'a read token is needed';
      document.body.dataset.state = 'token';
      return;
    }
    if (!res.ok) throw new Error(`the server answered ${res.status}`);
    const data = await res.json();
    $('token').hidden = true;
    $('content').hidden = false;
    render(data);
    document.body.dataset.state = 'ready';
  }

  $('token').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token-input').value.trim());
    load().catch(fail);
  });
  function fail(err) {
    $('error').hidden = false;
    $('error').textContent = `Could not load the figures: ${err.message}`;
    document.body.dataset.state = 'error';
  }
  load().catch(fail);
})();

% if unanswered:
<div class="notice problem" role="alert">
<p>Not every part answered:</p>
<ul>
% for part in unanswered:
<li>{{part}}</li>
% end
</ul>
</div>
% end
<section class="cards">
<div class="card">
<h2>Queues</h2>
<table>
<thead><tr><th scope="col">queue</th><th scope="col" class="number">waiting</th><th scope="col" class="number">in flight</th></tr></thead>
<tbody>
% for name, label in (('enrolment', enrolment_queue), ('invalid', invalid_queue)):
<tr><th scope="row">{{name}} <small>{{label}}</small></th><td class="number">{{figure(figures['queues'][name]['waiting'])}}</td><td class="number">{{figure(figures['queues'][name]['in_flight'])}}</td></tr>
% end
</tbody>
</table>
</div>
<div class="card">
<h2>Database</h2>
<table>
<tbody>
<tr><th scope="row">enrolments</th><td class="number">{{figure(figures['database']['enrolments'])}}</td></tr>
<tr><th scope="row">in the last 24 hours</th><td class="number">{{figure(figures['database']['enrolments_last_24h'])}}</td></tr>
<tr><th scope="row">companies</th><td class="number">{{figure(figures['database']['companies'])}}</td></tr>
<tr><th scope="row">suppliers</th><td class="number">{{figure(figures['database']['suppliers'])}}</td></tr>
<tr><th scope="row"><a href="{{base}}rejections">rejections</a> not re-driven</th><td class="number">{{figure(figures['database']['rejections'])}}</td></tr>
</tbody>
</table>
</div>
<div class="card">
<h2>E-mails</h2>
<table>
<tbody>
% for name in ('waiting', 'sent', 'failed', 'logged'):
<tr><th scope="row">{{name}}</th><td class="number">{{figure(figures['emails'][name])}}</td></tr>
% end
</tbody>
</table>
</div>
<div class="card">
<h2>Personal data kept</h2>
<table>
<tbody>
% for label, key in (('oldest rejection holding it', 'oldest_rejection'), ('oldest e-mail record holding it', 'oldest_email')):
% when = figures['personal_data'][key]
<tr><th scope="row">{{label}}</th><td class="number">
% if when:
<span class="nowrap">{{when[:10]}}</span> <span class="nowrap">{{when[11:16]}}</span>
% else:
-
% end
</td></tr>
% end
</tbody>
</table>
<p class="hint">Removed by <code>work</code> after REJECTION_RETENTION_DAYS and EMAIL_RETENTION_DAYS (UTC).</p>
</div>
</section>
<section>
<h2>Find an enrolment</h2>
<form class="search" method="get" action="{{base}}enrolments">
<label for="q">Company number, name, sso id or e-mail</label>
<div class="row"><input id="q" name="q" type="search" autocomplete="off"><button type="submit">Search</button></div>
</form>
</section>
<section>
<h2>CSV downloads</h2>
<form class="export" method="get" action="{{base}}export.csv">
<label for="table">Table</label>
<select id="table" name="table">
% for table in tables:
<option value="{{table}}">{{table}}</option>
% end
</select>
<label for="since">Created on or after (optional)</label>
<input id="since" name="since" type="date">
<button type="submit">Download CSV</button>
</form>
<p class="links">
% for table in tables:
<a href="{{base}}export.csv?table={{table}}">{{table}}.csv</a>
% end
</p>
</section>

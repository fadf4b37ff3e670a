<form class="search" method="get" action="{{base}}enrolments">
<label for="q">Search</label>
<div class="row">
<input id="q" name="q" type="search" value="{{query}}" autocomplete="off">
<select name="by" aria-label="Search by">
% for value, label in fields:
<option value="{{value}}"{{!' selected' if value == by else ''}}>{{label}}</option>
% end
</select>
<button type="submit">Search</button>
</div>
<p class="hint">A company name matches from its start, any case, listed by name; an e-mail matches whole, any case; the rest lists newest first.</p>
</form>
% if not page.rows:
<p class="empty">{{'No enrolment matches.' if query else 'No enrolments yet.'}}</p>
% else:
<div class="table-wrap">
<table class="list">
<thead><tr><th scope="col">company number</th><th scope="col">company name</th><th scope="col">sso id</th><th scope="col">e-mail</th><th scope="col">created (UTC)</th></tr></thead>
<tbody>
% for found in page.rows:
<tr>
<td data-label="company number">
% if found.enrolment_id is not None:
<a href="{{base}}enrolments/{{found.enrolment_id}}">{{found.company_number}}</a>
% else:
{{found.company_number}}
% end
</td>
<td data-label="company name">{{shown(found.company_name)}}</td>
<td data-label="sso id">{{shown(found.sso_id)}}</td>
<td data-label="e-mail">{{!email_shown(found.company_email)}}</td>
<td data-label="created (UTC)">{{found.created.strftime('%Y-%m-%d %H:%M')}}</td>
</tr>
% end
</tbody>
</table>
</div>
% end
% if next_url:
<p class="pager"><a href="{{next_url}}">{{'More results' if page.by_name else 'Older results'}}</a></p>
% end
% if rejections_found:
<h2>Rejections</h2>
<p class="hint">Set-aside enrolments whose payload held what you searched for.</p>
<div class="table-wrap">
<table class="list">
<thead><tr><th scope="col">message id</th><th scope="col">company number</th><th scope="col">company name</th><th scope="col">sso id</th><th scope="col">e-mail</th><th scope="col">set aside (UTC)</th></tr></thead>
<tbody>
% for rejection in rejections_found:
<tr>
<td data-label="message id"><a href="{{base}}messages/{{rejection.message_id}}"><code>{{rejection.message_id}}</code></a></td>
<td data-label="company number">{{rejection.company_number or '-'}}</td>
<td data-label="company name">{{rejection.company_name or '-'}}</td>
<td data-label="sso id">{{'-' if rejection.sso_id is None else rejection.sso_id}}</td>
<td data-label="e-mail">{{rejection.company_email or '-'}}</td>
<td data-label="set aside (UTC)">{{rejection.created.strftime('%Y-%m-%d %H:%M')}}</td>
</tr>
% end
</tbody>
</table>
</div>
% end

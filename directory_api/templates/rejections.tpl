% for kind, text in notices:
<div class="notice {{kind}}" role="status"><p>{{text}}</p>
% if kind == 'done' and moved_one:
<p><a href="{{base}}messages/{{moved_one}}">Follow {{moved_one}}</a></p>
% end
</div>
% end
% if page.rows:
<form class="redrive-all" method="get" action="{{base}}rejections/redrive-all">
<button type="submit" class="secondary">Re-drive all set-aside messages…</button>
<span class="hint">Asks first, saying how many it moves. Put the cause right first: a message set aside again comes back here with fresh reasons.</span>
</form>
<div class="table-wrap">
<table class="list">
<thead><tr><th scope="col">message id</th><th scope="col">whose</th><th scope="col">reasons</th><th scope="col">set aside (UTC)</th><th scope="col"><span class="visually-hidden">action</span></th></tr></thead>
<tbody>
% for rejection in page.rows:
<tr>
<td data-label="message id"><a href="{{base}}messages/{{rejection.message_id}}"><code>{{rejection.message_id}}</code></a></td>
<td data-label="whose">
% if rejection.company_name or rejection.company_number or rejection.company_email:
{{rejection.company_name or '-'}}<br><small>{{rejection.company_number or '-'}} · {{rejection.company_email or '-'}}</small>
% else:
-
% end
</td>
<td data-label="reasons">
<ul class="reasons">
% for field, messages in (rejection.errors.items() if isinstance(rejection.errors, dict) else []):
% for message in (messages if isinstance(messages, list) else [messages]):
<li><strong>{{field}}</strong>: {{message}}</li>
% end
% end
</ul>
</td>
<td data-label="set aside (UTC)">{{rejection.created.strftime('%Y-%m-%d %H:%M')}}</td>
<td class="action">
<form method="post" action="{{base}}rejections/redrive">
<input type="hidden" name="csrf_token" value="{{csrf_token}}">
<input type="hidden" name="message_id" value="{{rejection.message_id}}">
<button type="submit">Re-drive</button>
</form>
</td>
</tr>
% end
</tbody>
</table>
</div>
% if page.next_before is not None:
<p class="pager"><a href="{{base}}rejections?before={{page.next_before}}">Older rejections</a></p>
% end
% else:
<p class="empty">No rejection waiting for a re-drive.</p>
% end
% if redriven:
<h2>Recently re-driven</h2>
<div class="table-wrap">
<table class="list">
<thead><tr><th scope="col">message id</th><th scope="col">re-driven (UTC)</th><th scope="col">now</th></tr></thead>
<tbody>
% for rejection, state, enrolment_id in redriven:
<tr>
<td data-label="message id"><code>{{rejection.message_id}}</code></td>
<td data-label="re-driven (UTC)">{{rejection.redriven.strftime('%Y-%m-%d %H:%M:%S')}}</td>
<td data-label="now" class="state-{{state}}">
% if enrolment_id is not None:
<a href="{{base}}enrolments/{{enrolment_id}}">created: enrolment {{enrolment_id}}</a>
% else:
{{'on the enrolment queue' if state == 'redriven' else state}}
% end
</td>
</tr>
% end
</tbody>
</table>
</div>
% end

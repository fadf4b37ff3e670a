<h2>History</h2>
% if not history:
<p class="empty">Never re-driven.</p>
% else:
<div class="table-wrap">
<table class="list">
<thead><tr><th scope="col">re-driven (UTC)</th><th scope="col">from where</th><th scope="col">what became of it</th></tr></thead>
<tbody>
% for entry in history:
<tr>
<td data-label="re-driven (UTC)">{{entry.at.strftime('%Y-%m-%d %H:%M:%S')}}</td>
<td data-label="from where">{{entry.source}}</td>
<td data-label="what became of it">
% if entry.outcome == 'saved':
<a class="state-created" href="{{base}}enrolments/{{entry.enrolment_id}}">saved as enrolment {{entry.enrolment_id}}</a>
% elif entry.outcome == 'set_aside':
<span class="state-rejected">set aside again at {{entry.set_aside.replace('T', ' ')}}</span>
<ul class="reasons">
% for field, messages in (entry.errors.items() if isinstance(entry.errors, dict) else []):
% for message in (messages if isinstance(messages, list) else [messages]):
<li><strong>{{field}}</strong>: {{message}}</li>
% end
% end
</ul>
% else:
on the enrolment queue, waiting for the worker
% end
</td>
</tr>
% end
</tbody>
</table>
</div>
% end

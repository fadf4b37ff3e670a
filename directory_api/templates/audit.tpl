<p class="hint">Every re-drive and erase: when, what and from where. Personal data is never recorded here.</p>
% if not page.rows:
<p class="empty">Nothing re-driven or erased yet.</p>
% else:
<div class="table-wrap">
<table class="list">
<thead><tr><th scope="col">when (UTC)</th><th scope="col">action</th><th scope="col">what</th><th scope="col">from where</th><th scope="col">outcome</th></tr></thead>
<tbody>
% for row in page.rows:
<tr>
<td data-label="when (UTC)">{{row.at.strftime('%Y-%m-%d %H:%M:%S')}}</td>
<td data-label="action">{{row.action}}</td>
<td data-label="what">
% if row.action == 'redrive':
<a href="{{base}}messages/{{row.subject}}"><code>{{row.subject}}</code></a>
% else:
{{row.subject}}
% end
</td>
<td data-label="from where">{{row.source}}</td>
<td data-label="outcome">{{describe(row)}}</td>
</tr>
% end
</tbody>
</table>
</div>
% end
% if page.next_before is not None:
<p class="pager"><a href="{{base}}audit?before={{page.next_before}}">Older entries</a></p>
% end

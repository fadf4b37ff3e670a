<dl>
<dt>message id</dt><dd><code>{{message_id}}</code></dd>
<dt>state</dt><dd class="state-{{state}}">{{description}}</dd>
</dl>
% if enrolment_id is not None:
<p><a href="{{base}}enrolments/{{enrolment_id}}">Open enrolment {{enrolment_id}}</a></p>
% elif rejection is not None:
<h2>Reasons it was set aside</h2>
<p class="hint">Set aside at {{rejection.created.strftime('%Y-%m-%d %H:%M:%S')}} UTC.</p>
<ul class="reasons">
% for field, messages in (rejection.errors.items() if isinstance(rejection.errors, dict) else []):
% for message in (messages if isinstance(messages, list) else [messages]):
<li><strong>{{field}}</strong>: {{message}}</li>
% end
% end
</ul>
% end
% if case is not None:
% r = case.rejection
<h2>Whose enrolment it was</h2>
% if r.erased is not None:
<p class="empty">Its personal data was removed on {{r.erased.strftime('%Y-%m-%d %H:%M')}} UTC (erased, or kept past its retention).</p>
% else:
<dl class="whose">
<dt>company number</dt><dd>{{r.company_number or '-'}}</dd>
<dt>company name</dt><dd>{{r.company_name or '-'}}</dd>
<dt>sso id</dt><dd>{{'-' if r.sso_id is None else r.sso_id}}</dd>
<dt>e-mail</dt><dd>{{r.company_email or '-'}}</dd>
</dl>
% if r.company_number or r.sso_id is not None:
<p><a href="{{base}}enrolments?{{search_query(r)}}">Find what is registered under these</a></p>
% end
% end
<h2>Payload, as received</h2>
% if case.payload is None:
<p class="empty">Not kept.</p>
% else:
<pre class="payload">{{case.payload}}</pre>
% end
{{!history_html}}
% end

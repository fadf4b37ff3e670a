<dl>
<dt>message id</dt><dd><code>{{message_id}}</code></dd>
<dt>state</dt><dd class="state-{{state}}">{{description}}</dd>
</dl>
% if enrolment_id is not None:
<p><a href="{{base}}enrolments/{{enrolment_id}}">Open enrolment {{enrolment_id}}</a></p>
% elif rejection is not None:
<h2>Reasons it was set aside</h2>
<ul class="reasons">
% for field, messages in (rejection.errors.items() if isinstance(rejection.errors, dict) else []):
% for message in (messages if isinstance(messages, list) else [messages]):
<li><strong>{{field}}</strong>: {{message}}</li>
% end
% end
</ul>
% end
